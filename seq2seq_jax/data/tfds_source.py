"""TensorFlow Datasets translation corpora, read without TensorFlow.

`data.source = "tfds:<name>[/<config>]"`, for example
`tfds:ted_hrlr_translate/pt_to_en` or `tfds:wmt14_translate/de-en`: the
examples are read through `DatasetBuilder.as_data_source` (random access to
ArrayRecord files, what `tfds.data_source` returns), so TensorFlow is not
needed; `tfds.load` would need it.

The dataset must be prepared beforehand in the ArrayRecord format; this
module never downloads (offline, TFDS's download hangs for minutes before it
fails). An unprepared dataset is a DataError with the command that prepares
it, either TFDS's CLI (which needs TensorFlow installed)

  tfds build ted_hrlr_translate/pt_to_en --file_format=array_record \
      --data_dir=~/tensorflow_datasets

or, without TensorFlow, this module's own

  python -m seq2seq_jax.data.tfds_source ted_hrlr_translate/pt_to_en \
      --data_dir=~/tensorflow_datasets

Config (the `data` ConfigDict):
  tfds_data_dir: where prepared datasets live; "" = TFDS's default
    (~/tensorflow_datasets, or $TFDS_DATA_DIR).
  tfds_keys: "source_feature,target_feature"; "" = the dataset's supervised
    keys (ted_hrlr_translate/pt_to_en: pt -> en).
  tfds_splits: the dataset's split names for train, valid and test, comma-
    separated; TFDS slices work ("train[:98%],train[98%:],test").

The training split is a `TfdsPairs`, random access over the data source
(examples are read when they are asked for, so a corpus of any size
trains); the held-out splits are lists. Text is decoded from UTF-8 if it
comes as bytes and stripped; pairs with an empty side after stripping are
skipped (`TfdsPairs` finds them in one pass when it is made, and keeps only
their indices).
"""

import argparse
import collections.abc
import difflib
import operator
import os
import sys
from typing import Any, Iterator, Sequence

import numpy as np

from seq2seq_jax.data import pairs
from seq2seq_jax.errors import ConfigError, DataError

# Examples fetched from a data source per call (ArrayRecord reads batches
# much faster than single records).
_READ_CHUNK = 1024


def _tfds():
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    # The WMT builders (wmt14_translate, ...) register only when imported.
    import tensorflow_datasets.translate  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    raise ConfigError(
        f"tfds: sources need tensorflow-datasets ({e}); "
        "pip install tensorflow-datasets") from None
  return tfds


def _field(config, name):
  try:
    return getattr(config, name)
  except (AttributeError, KeyError):
    raise ConfigError(f"data.{name} is missing from the config") from None


def _data_dir(data_config):
  value = _field(data_config, "tfds_data_dir")
  if not isinstance(value, str):
    raise ConfigError(
        f"data.tfds_data_dir must be a path or '', got {value!r}")
  return os.path.expanduser(value) if value else None


def _split_names(data_config):
  value = _field(data_config, "tfds_splits")
  names = [s.strip() for s in value.split(",")] if isinstance(value, str) \
      else []
  if len(names) != 3 or not all(names):
    raise ConfigError(
        "data.tfds_splits must name the train, valid and test splits, "
        f"comma-separated (e.g. 'train,validation,test'), got {value!r}")
  return dict(zip(pairs.SPLITS, names))


def prepare_command(name: str, data_dir: str) -> str:
  """The command line that prepares `name` for this module (TFDS's CLI)."""
  imports = (" --imports=tensorflow_datasets.translate"
             if name.startswith("wmt") else "")
  return (f"tfds build {name} --file_format=array_record "
          f"--data_dir={data_dir}{imports}")


def _builder(tfds, name, data_dir):
  """Finds the builder of `name` ("dataset[/config]") without downloading."""
  base, _, config = name.partition("/")
  try:
    cls = tfds.builder_cls(base)
  except tfds.core.registered.DatasetNotFoundError:
    known = set(tfds.list_builders(with_community_datasets=False))
    close = difflib.get_close_matches(base, sorted(known), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else (
        "; see https://www.tensorflow.org/datasets/catalog")
    raise DataError(f"unknown TFDS dataset {base!r}{hint}") from None
  configs = list(getattr(cls, "builder_configs", None) or {})
  if config and config not in configs:
    listed = ", ".join(configs) if configs else "none"
    raise DataError(
        f"TFDS dataset {base} has no config {config!r} (configs: {listed})")
  try:
    return tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f"cannot open TFDS dataset {name}: {e}") from None


def _keys(data_config, builder, name):
  features = builder.info.features
  try:
    feature_names = list(features.keys())
  except AttributeError:
    feature_names = []
  value = _field(data_config, "tfds_keys")
  if not isinstance(value, str):
    raise ConfigError(
        f"data.tfds_keys must be 'source,target' or '', got {value!r}")
  if value:
    keys = tuple(k.strip() for k in value.split(","))
    if len(keys) != 2 or not all(keys):
      raise ConfigError(
          f"data.tfds_keys must be 'source,target' or '', got {value!r}")
  else:
    keys = builder.info.supervised_keys
    if not (isinstance(keys, tuple) and len(keys) == 2
            and all(isinstance(k, str) for k in keys)):
      raise ConfigError(
          f"TFDS dataset {name} has no (source, target) supervised keys; "
          "set data.tfds_keys to 'source,target' (features: "
          f"{', '.join(feature_names)})")
  missing = [k for k in keys if k not in feature_names]
  if missing:
    raise DataError(
        f"TFDS dataset {name} has no feature {missing[0]!r} "
        f"(data.tfds_keys); features: {', '.join(feature_names)}")
  return keys


def _check_split_names(builder, name, splits):
  available = list(builder.info.splits.keys())
  for role, split in splits.items():
    for part in split.split("+"):
      base = part.split("[")[0].strip()
      if base not in available:
        raise DataError(
            f"TFDS dataset {name} has no split {base!r} (data.tfds_splits, "
            f"{role}); splits: {', '.join(available)}")


def _data_sources(builder, name, splits, data_dir):
  """{role: data source}; an unprepared dataset is a DataError, fast."""
  prepared = builder.is_prepared()
  if prepared:
    file_format = builder.info.file_format
    if getattr(file_format, "value", file_format) not in (
        "array_record", "parquet"):
      raise DataError(
          f"TFDS dataset {name} in {builder.data_dir} is prepared as "
          f"{getattr(file_format, 'value', file_format)}, which has no "
          "random access; prepare it again in another data.tfds_data_dir "
          f"with: {prepare_command(name, '<dir>')}")
    _check_split_names(builder, name, splits)
  try:
    # Reads prepared files only: as_data_source never downloads.
    return {role: builder.as_data_source(split=split)
            for role, split in splits.items()}
  except Exception as e:  # pylint: disable=broad-except
    if not prepared:
      root = data_dir or os.fspath(
          getattr(builder, "_data_dir_root", None) or "~/tensorflow_datasets")
      raise DataError(
          f"TFDS dataset {name} is not prepared in {root}; prepare it once "
          f"(downloads) with: {prepare_command(name, root)} "
          "(the tfds CLI needs TensorFlow; without it: python -m "
          f"seq2seq_jax.data.tfds_source {name} --data_dir={root})"
      ) from None
    raise DataError(f"cannot read TFDS dataset {name}: {e}") from None


def _text(value, name, key, index):
  if isinstance(value, bytes):
    try:
      value = value.decode("utf-8")
    except UnicodeDecodeError:
      raise DataError(
          f"TFDS dataset {name}: feature {key!r} of example {index} is not "
          "UTF-8") from None
  elif hasattr(value, "item"):  # a numpy scalar
    return _text(value.item(), name, key, index)
  if not isinstance(value, str):
    raise DataError(
        f"TFDS dataset {name}: feature {key!r} is not text "
        f"(got {type(value).__name__}); choose other data.tfds_keys")
  return value.strip()


def iter_pairs(source, keys, name) -> Iterator[tuple]:
  """Yields (source, target) strings of a data source in index order,
  skipping pairs with an empty side."""
  for _, src, tgt in _examples(source, keys, name):
    if src and tgt:
      yield src, tgt


def _examples(source, keys, name) -> Iterator[tuple]:
  """Yields (index, source, target) for every example, in index order,
  reading `_READ_CHUNK` examples at a time."""
  src_key, tgt_key = keys
  total = len(source)
  getitems = getattr(source, "__getitems__", None)
  for start in range(0, total, _READ_CHUNK):
    indices = list(range(start, min(start + _READ_CHUNK, total)))
    examples = None
    if getitems is not None:
      try:
        examples = getitems(indices)
      except TypeError:
        # No working batch read (tfds.testing.mock_data's is broken, for
        # one): read one example at a time.
        getitems = None
    if examples is None:
      examples = [source[i] for i in indices]
    for index, example in zip(indices, examples):
      yield (index, _text(example[src_key], name, src_key, index),
             _text(example[tgt_key], name, tgt_key, index))


class TfdsPairs(collections.abc.Sequence):
  """A TFDS split as a random-access sequence of (source, target) pairs.

  `pairs[i]` reads one example of the data source (`as_data_source`, itself
  random access and safe to read from several threads) and decodes it as
  `iter_pairs` does; iteration gives exactly `iter_pairs`'s pairs. The
  examples with an empty side, which `iter_pairs` skips, are found by one
  pass when the object is made; only their indices are kept, so index i
  maps to the i-th example with both sides. Pickles with its data source.
  """

  def __init__(self, source, keys: tuple, name: str, description: str = ""):
    """Args:
      source: a TFDS data source (len, [i]).
      keys: (source feature, target feature).
      name: the dataset, for messages.
      description: what `repr` calls it (default: the name).
    """
    self.source, self.keys, self.name = source, tuple(keys), name
    self.description = description or name
    skipped = [i for i, src, tgt in _examples(source, self.keys, name) if not (src and tgt)]
    self.skipped = np.asarray(skipped, np.int64)
    # The k-th skipped index minus k: how many kept examples precede it.
    self._kept_before = self.skipped - np.arange(len(self.skipped))
    self._len = len(source) - len(skipped)

  def __len__(self) -> int:
    return self._len

  def __repr__(self) -> str:
    return f"TfdsPairs({self.description}, {self._len} pairs)"

  def __getitem__(self, index) -> tuple:
    i = operator.index(index)  # TypeError for slices and floats
    if not 0 <= i < self._len:
      raise IndexError(f"index {index} out of range for {self!r}")
    # Skipped examples before the answer: those with fewer than i+1 kept
    # examples before them.
    raw = i + int(np.searchsorted(self._kept_before, i, side="right"))
    example = self.source[raw]
    return tuple(_text(example[key], self.name, key, raw) for key in self.keys)

  def __iter__(self) -> Iterator[tuple]:
    return iter_pairs(self.source, self.keys, self.name)


def load_tfds_splits(name_and_config: str, data_config: Any,
                     only: Sequence[str] = pairs.SPLITS) -> dict:
  """Loads the train/valid/test pairs of a prepared TFDS dataset.

  Args:
    name_and_config: "<name>[/<config>]" (what follows "tfds:").
    data_config: the config's `data`; see the module docstring.
    only: the splits to open (the others are not read).

  Returns:
    {"train", "valid", "test"} (those in `only`): "train" a `TfdsPairs`,
    the others lists of (source, target) str pairs.

  Raises:
    ConfigError: a malformed tfds_* field.
    DataError: unknown dataset, config, split or feature (the message lists
      the available ones), or a dataset that is not prepared (the message
      gives the command that prepares it).
  """
  name = name_and_config.strip().strip("/")
  if not name:
    raise ConfigError(
        "data.source 'tfds:' needs a dataset name, e.g. "
        "'tfds:ted_hrlr_translate/pt_to_en'")
  data_dir = _data_dir(data_config)
  splits = {role: split for role, split in _split_names(data_config).items() if role in only}
  tfds = _tfds()
  builder = _builder(tfds, name, data_dir)
  keys = _keys(data_config, builder, name)
  data_sources = _data_sources(builder, name, splits, data_dir)

  out = {}
  for role, source in data_sources.items():
    if role == "train":
      out[role] = TfdsPairs(source, keys, name, f"tfds:{name} {splits[role]}")
    else:
      out[role] = list(iter_pairs(source, keys, name))
  return out


def prepare(name: str, data_dir: str) -> str:
  """Downloads and prepares `name` in the ArrayRecord format (no TensorFlow
  needed); returns the dataset's directory."""
  tfds = _tfds()
  _builder(tfds, name, data_dir)  # a clear error for unknown names
  builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare()
  return os.fspath(builder.data_dir)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m seq2seq_jax.data.tfds_source",
      description="Download and prepare a TFDS translation dataset for "
      "tfds:<name> sources (ArrayRecord format, no TensorFlow needed).")
  parser.add_argument("name", help="dataset[/config], e.g. "
                      "ted_hrlr_translate/pt_to_en")
  parser.add_argument("--data_dir", default="",
                      help="where to put it; default: TFDS's default")
  args = parser.parse_args(argv)
  try:
    path = prepare(args.name, os.path.expanduser(args.data_dir) or None)
  except (ConfigError, DataError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"prepared {args.name} in {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
