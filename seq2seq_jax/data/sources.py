"""Where the (source, target) string pairs come from: built-in tasks or TSV.

`data.source` in the config selects one:

  builtin:<task>   a generated task from `tasks.py` (no download)
  tsv:<path>       local tab-separated parallel text, `source<TAB>target`,
                   optionally gzipped (`.gz`); further columns are ignored,
                   so the Tatoeba / manythings.org files work as they are.
"""

import gzip
import os
from typing import Any

import numpy as np

from seq2seq_jax.data import tasks
from seq2seq_jax.errors import ConfigError, DataError

SPLITS = ("train", "valid", "test")


class PairStream:
  """A training split too large to hold: re-iterable (source, target) pairs.

  `open_pairs()` must return a fresh iterator over the pairs in the same
  order every time it is called; iterating a PairStream calls it, so each
  epoch reads the source again and memory does not grow with its size.
  """

  def __init__(self, open_pairs, description: str):
    self._open_pairs = open_pairs
    self.description = description

  def __iter__(self):
    return iter(self._open_pairs())

  def __repr__(self) -> str:
    return f"PairStream({self.description})"


def read_tsv(path: str) -> tuple:
  """Reads `source<TAB>target[<TAB>ignored...]` lines.

  Args:
    path: a UTF-8 text file, gzip-compressed if the name ends in ".gz".

  Returns:
    (pairs, stats): pairs is a list of (source, target) with surrounding
    whitespace stripped, in file order; stats is a dict with "lines" (all
    lines read), "blank_lines" (whitespace-only lines, skipped), "pairs" and
    "extra_column_lines" (lines with more than two columns).

  Raises:
    DataError: missing/unreadable file, or a line that is not UTF-8, has no
      tab, or has an empty source or target; the message names path:line.
  """
  pairs = []
  stats = {"lines": 0, "blank_lines": 0, "pairs": 0, "extra_column_lines": 0}
  opener = gzip.open if str(path).endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      for lineno, raw in enumerate(f, start=1):
        stats["lines"] = lineno
        pair = _parse_line(path, lineno, raw, stats)
        if pair is not None:
          pairs.append(pair)
  except FileNotFoundError:
    raise DataError(f"data file not found: {path}") from None
  except IsADirectoryError:
    raise DataError(f"data file is a directory: {path}") from None
  except (OSError, EOFError) as e:
    # gzip reports corrupt or truncated archives as OSError / EOFError.
    raise DataError(f"cannot read data file {path}: {e}") from None
  stats["pairs"] = len(pairs)
  return pairs, stats


def _parse_line(path, lineno, raw, stats):
  try:
    line = raw.decode("utf-8")
  except UnicodeDecodeError:
    raise DataError(f"{path}:{lineno}: not valid UTF-8") from None
  line = line.rstrip("\r\n")
  if lineno == 1:
    # Editors on Windows like to start UTF-8 files with a byte order mark.
    line = line.removeprefix("\ufeff")
  if not line.strip():
    stats["blank_lines"] += 1
    return None
  columns = line.split("\t")
  if len(columns) < 2:
    raise DataError(
        f"{path}:{lineno}: expected 'source<TAB>target', found 1 column")
  if len(columns) > 2:
    stats["extra_column_lines"] += 1
  source, target = columns[0].strip(), columns[1].strip()
  if not source:
    raise DataError(f"{path}:{lineno}: empty source")
  if not target:
    raise DataError(f"{path}:{lineno}: empty target")
  return source, target


def _field(config, name):
  try:
    return getattr(config, name)
  except (AttributeError, KeyError):
    raise ConfigError(f"data.{name} is missing from the config") from None


def _source_error(value):
  return ConfigError(
      f"data.source must be 'builtin:<task>' (tasks: {', '.join(tasks.TASKS)})"
      f" or 'tsv:<path>', got {value!r}")


def load_splits(data_config: Any) -> dict:
  """Loads the train/valid/test pairs that `data_config` describes.

  Args:
    data_config: the config's `data` ConfigDict (or any object with these
      attributes):
      source: "builtin:<task>" or "tsv:<path>".
      seed: non-negative int; generation and TSV splitting depend only on it.
      builtin only: num_train, num_valid, num_test, min_len, max_len (None
        or 0 means the task default); see `tasks.make_task`.
      tsv only: valid_path, test_path ("" means split off the main file),
        valid_fraction, test_fraction (used for the splits without a path).

  Returns:
    {"train", "valid", "test"} -> list of (source, target) string pairs.

  TSV splitting drops exact duplicate pairs first, then assigns whole groups
  of pairs with the same source to one split (a sentence with several
  reference translations must not be in train and test at once), chosen at
  random from `seed`. Each split keeps the file order.
  """
  source = _field(data_config, "source")
  if not isinstance(source, str) or ":" not in source:
    raise _source_error(source)
  scheme, _, rest = source.partition(":")
  if scheme == "builtin":
    if rest not in tasks.TASKS:
      raise _source_error(source)
    return tasks.make_task(
        rest, _field(data_config, "seed"),
        num_train=_field(data_config, "num_train"),
        num_valid=_field(data_config, "num_valid"),
        num_test=_field(data_config, "num_test"),
        # The config holds ints, so it spells "task default" as 0.
        min_len=_field(data_config, "min_len") or None,
        max_len=_field(data_config, "max_len") or None)
  if scheme == "tsv":
    if not rest:
      raise _source_error(source)
    return _load_tsv_splits(rest, data_config)
  raise _source_error(source)


def _load_tsv_splits(path, data_config):
  seed = _field(data_config, "seed")
  if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
    raise ConfigError(f"data.seed must be an integer >= 0, got {seed!r}")
  explicit = {"valid": _field(data_config, "valid_path") or "",
              "test": _field(data_config, "test_path") or ""}
  fractions = {}
  for split in ("valid", "test"):
    if not explicit[split]:
      name = f"{split}_fraction"
      value = _field(data_config, name)
      if (isinstance(value, bool) or not isinstance(value, (int, float))
          or not 0 <= value < 1):
        raise ConfigError(f"data.{name} must be in [0, 1), got {value!r}")
      fractions[split] = float(value)
  if sum(fractions.values()) >= 1:
    raise ConfigError(
        "data.valid_fraction + data.test_fraction must be < 1, got "
        f"{sum(fractions.values())}")

  main = _dedupe(_read_nonempty(path))
  splits = {split: _dedupe(_read_nonempty(explicit[split]))
            for split in ("valid", "test") if explicit[split]}
  if fractions:
    carved = split_by_source(main, fractions, seed)
    if not carved["train"]:
      raise DataError(
          f"{path}: {len(main)} pairs leave nothing for training after "
          "taking data.valid_fraction/data.test_fraction; lower them")
    main = carved.pop("train")
    splits.update(carved)
  splits["train"] = main
  return {split: splits[split] for split in SPLITS}


def _read_nonempty(path):
  pairs, _ = read_tsv(os.path.expanduser(path))
  if not pairs:
    raise DataError(f"{path}: no source<TAB>target pairs found")
  return pairs


def _dedupe(pairs):
  return list(dict.fromkeys(pairs))


def split_by_source(pairs: list, fractions: dict, seed: int) -> dict:
  """Carves random splits off `pairs`, keeping equal sources together.

  Args:
    pairs: list of (source, target).
    fractions: split name -> fraction of the distinct sources, e.g.
      {"valid": 0.05, "test": 0.05}; a positive fraction gets at least one
      source. Splits are carved in sorted name order.
    seed: non-negative int.

  Returns:
    {"train": rest, **{name: pairs}}; every list keeps the order of `pairs`.
  """
  sources = list(dict.fromkeys(src for src, _ in pairs))
  order = np.random.default_rng(seed).permutation(len(sources))
  assignment = {}
  start = 0
  for name in sorted(fractions):
    count = int(round(fractions[name] * len(sources)))
    if fractions[name] > 0:
      count = max(count, 1)
    for k in order[start:start + count]:
      assignment[sources[k]] = name
    start += count
  out = {"train": [], **{name: [] for name in fractions}}
  for pair in pairs:
    out[assignment.get(pair[0], "train")].append(pair)
  return out
