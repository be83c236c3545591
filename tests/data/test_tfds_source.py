"""Tests for seq2seq_jax.data.tfds_source (TFDS without TensorFlow).

The datasets are faked with `tfds.testing.mock_data`, which replaces the
data sources `as_data_source` returns; nothing is downloaded.
"""

import os
import pickle
import threading
import time
import types

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from seq2seq_jax.data import sources, tfds_source  # pylint: disable=g-import-not-at-top
from seq2seq_jax.errors import ConfigError, DataError  # pylint: disable=g-import-not-at-top

TED = "ted_hrlr_translate/pt_to_en"
WMT = "wmt14_translate/de-en"
NUM_EXAMPLES = 6


def data_config(**overrides):
  fields = dict(source="", tfds_data_dir="", tfds_keys="",
                tfds_splits="train,validation,test")
  fields.update(overrides)
  return types.SimpleNamespace(**fields)


@pytest.fixture
def mocked():
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    yield


def expected_pairs(name, keys, split="train"):
  """The mock's examples, read directly through tfds.data_source."""
  source = tfds.data_source(name, split=split, download=False)
  return [(source[i][keys[0]].strip(), source[i][keys[1]].strip())
          for i in range(len(source))]


def prepare_metadata(data_dir, name, file_format="array_record"):
  """Writes the dataset_info.json of a prepared dataset (no records), so
  the builder reports itself prepared with real split names."""
  builder = tfds.builder(name, data_dir=data_dir, file_format=file_format)
  infos = [
      tfds.core.SplitInfo(
          name=split, shard_lengths=[NUM_EXAMPLES], num_bytes=100,
          filename_template=tfds.core.ShardedFileTemplate(
              data_dir=builder.data_path, dataset_name=builder.name,
              split=split, filetype_suffix=file_format))
      for split in ("train", "validation", "test")]
  builder.info.set_splits(tfds.core.SplitDict(infos))
  os.makedirs(builder.data_dir, exist_ok=True)
  builder.info.write_to_directory(builder.data_dir)


@pytest.mark.parametrize("name, keys", [(TED, ("pt", "en")),
                                        (WMT, ("de", "en"))])
def test_splits_use_supervised_keys(mocked, name, keys):
  splits = tfds_source.load_tfds_splits(name, data_config())
  assert set(splits) == set(sources.SPLITS)
  for split, tfds_split in zip(sources.SPLITS,
                               ("train", "validation", "test")):
    pairs = splits[split]
    assert isinstance(pairs, tfds_source.TfdsPairs if split == "train" else list)
    pairs = list(pairs)
    assert len(pairs) == NUM_EXAMPLES
    assert all(isinstance(s, str) and isinstance(t, str) and s and t
               and s == s.strip() for s, t in pairs)
    assert pairs == expected_pairs(name, keys, tfds_split)


def _lists(splits):
  return {name: list(pairs) for name, pairs in splits.items()}


def test_through_load_splits(mocked):
  config = data_config(source=f"tfds:{TED}")
  assert _lists(sources.load_splits(config)) == _lists(tfds_source.load_tfds_splits(
      TED, config))
  assert _lists(sources.load_splits(config, only=("test",))) == {
      "test": tfds_source.load_tfds_splits(TED, config)["test"]}


def test_keys_from_config_reverse_direction(mocked):
  forward = _lists(tfds_source.load_tfds_splits(TED, data_config()))
  backward = _lists(tfds_source.load_tfds_splits(TED, data_config(tfds_keys="en,pt")))
  for split in sources.SPLITS:
    assert backward[split] == [(t, s) for s, t in forward[split]]


@pytest.mark.parametrize("name", [TED, WMT])
def test_training_split_is_random_access(mocked, name):
  splits = tfds_source.load_tfds_splits(name, data_config())
  train = splits["train"]
  source = tfds.data_source(name, split="train", download=False)
  expected = list(tfds_source.iter_pairs(source, train.keys, name))
  assert len(train) == len(expected) == NUM_EXAMPLES
  assert [train[i] for i in range(len(train))] == expected
  assert list(train) == expected
  assert list(train) == expected  # iterable again, in the same order
  assert repr(train) == f"TfdsPairs(tfds:{name} train, {NUM_EXAMPLES} pairs)"
  for bad in (-1, NUM_EXAMPLES):
    with pytest.raises(IndexError):
      train[bad]
  assert isinstance(splits["valid"], list) and isinstance(splits["test"], list)
  copy = pickle.loads(pickle.dumps(train))
  assert list(copy) == expected and copy[2] == expected[2]


class _ListSource:
  """A data source over a list of examples (no batch read)."""

  def __init__(self, examples):
    self.examples = examples

  def __len__(self):
    return len(self.examples)

  def __getitem__(self, i):
    return self.examples[i]


def test_pairs_with_an_empty_side_are_skipped_by_index_too():
  texts = [("a", "A"), (" ", "B"), (b" c ", np.str_("C")), ("", ""), ("d", "  "),
           ("e", b"E"), (np.bytes_(b"f"), "F"), ("  ", "G")]
  source = _ListSource([{"src": s, "tgt": t} for s, t in texts])
  pairs = tfds_source.TfdsPairs(source, ("src", "tgt"), "fake")
  expected = [("a", "A"), ("c", "C"), ("e", "E"), ("f", "F")]
  assert list(tfds_source.iter_pairs(source, ("src", "tgt"), "fake")) == expected
  assert len(pairs) == 4 and list(pairs) == expected
  assert [pairs[i] for i in range(4)] == expected
  assert pairs.skipped.tolist() == [1, 3, 4, 7]
  with pytest.raises(IndexError):
    pairs[4]
  errors = []

  def read(worker):
    try:
      for i in np.random.default_rng(worker).permutation(40) % 4:
        assert pairs[int(i)] == expected[i]
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)

  threads = [threading.Thread(target=read, args=(k,)) for k in range(4)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors
  bad = tfds_source.TfdsPairs(_ListSource([{"src": "a", "tgt": "b"}] * 3), ("src", "tgt"),
                              "fake")
  bad.source.examples[1] = {"src": b"\xff", "tgt": "b"}
  with pytest.raises(DataError, match="feature 'src' of example 1 is not UTF-8"):
    bad[1]


def test_unknown_feature_lists_features(mocked):
  with pytest.raises(DataError, match=r"no feature 'fr'.*features: pt, en"):
    tfds_source.load_tfds_splits(TED, data_config(tfds_keys="fr,en"))


@pytest.mark.parametrize("field, value, match", [
    ("tfds_keys", "pt", "data.tfds_keys"),
    ("tfds_keys", "pt,en,de", "data.tfds_keys"),
    ("tfds_splits", "train,test", "data.tfds_splits"),
    ("tfds_splits", "train,,test", "data.tfds_splits"),
])
def test_bad_config_fields(mocked, field, value, match):
  with pytest.raises(ConfigError, match=match):
    tfds_source.load_tfds_splits(TED, data_config(**{field: value}))


def test_unknown_dataset_and_config():
  with pytest.raises(DataError, match="unknown TFDS dataset.*ted_hrlr"):
    tfds_source.load_tfds_splits("ted_hrlr_translat/pt_to_en", data_config())
  with pytest.raises(DataError, match=r"no config 'xx_to_en'.*pt_to_en"):
    tfds_source.load_tfds_splits("ted_hrlr_translate/xx_to_en", data_config())
  with pytest.raises(ConfigError, match="needs a dataset name"):
    sources.load_splits(data_config(source="tfds:"))


@pytest.mark.parametrize("name", [TED, WMT])
def test_missing_dataset_fails_fast_naming_tfds_build(tmp_path, name):
  start = time.monotonic()
  with pytest.raises(DataError) as info:
    tfds_source.load_tfds_splits(name, data_config(tfds_data_dir=str(tmp_path)))
  assert time.monotonic() - start < 10
  message = str(info.value)
  assert "not prepared" in message
  assert (f"tfds build {name} --file_format=array_record "
          f"--data_dir={tmp_path}") in message
  assert "\n" not in message


def test_prepared_dataset_checks_split_names(tmp_path):
  prepare_metadata(str(tmp_path), TED)
  config = data_config(tfds_data_dir=str(tmp_path), tfds_splits="train,dev,test")
  with pytest.raises(DataError,
                     match=r"no split 'dev'.*splits: train, validation, test"):
    tfds_source.load_tfds_splits(TED, config)
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES,
                              policy=tfds.testing.MockPolicy.USE_FILES,
                              data_dir=str(tmp_path)):
    splits = tfds_source.load_tfds_splits(TED, data_config(
        tfds_data_dir=str(tmp_path),
        tfds_splits="train[:50%],train[50%:]+validation,test"))
  assert all(len(splits[s]) == NUM_EXAMPLES for s in sources.SPLITS)


def test_prepared_as_tfrecord_is_refused(tmp_path):
  prepare_metadata(str(tmp_path), TED, file_format="tfrecord")
  with pytest.raises(DataError, match="prepared as tfrecord.*array_record"):
    tfds_source.load_tfds_splits(TED, data_config(tfds_data_dir=str(tmp_path)))


def test_prepare_command_line(mocked, capsys):
  # Under mock_data, download_and_prepare does nothing.
  assert tfds_source.main([TED, "--data_dir=/tmp/unused"]) == 0
  assert f"prepared {TED}" in capsys.readouterr().out
  assert tfds_source.main(["no_such_dataset"]) == 2
  assert "unknown TFDS dataset" in capsys.readouterr().err
