"""Tests for seq2seq_jax.data.tfds_source (TFDS without TensorFlow).

The datasets are faked with `tfds.testing.mock_data`, which replaces the
data sources `as_data_source` returns; nothing is downloaded.
"""

import os
import time
import types

import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from seq2seq_jax.data import sources, tfds_source  # pylint: disable=g-import-not-at-top
from seq2seq_jax.errors import ConfigError, DataError  # pylint: disable=g-import-not-at-top

TED = "ted_hrlr_translate/pt_to_en"
WMT = "wmt14_translate/de-en"
NUM_EXAMPLES = 6


def data_config(**overrides):
  fields = dict(source="", tfds_data_dir="", tfds_keys="",
                tfds_splits="train,validation,test", bucket_window=0)
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
    assert isinstance(pairs, list) and len(pairs) == NUM_EXAMPLES
    assert all(isinstance(s, str) and isinstance(t, str) and s and t
               and s == s.strip() for s, t in pairs)
    assert pairs == expected_pairs(name, keys, tfds_split)


def test_through_load_splits(mocked):
  config = data_config(source=f"tfds:{TED}")
  assert sources.load_splits(config) == tfds_source.load_tfds_splits(
      TED, config)


def test_keys_from_config_reverse_direction(mocked):
  forward = tfds_source.load_tfds_splits(TED, data_config())
  backward = tfds_source.load_tfds_splits(TED, data_config(tfds_keys="en,pt"))
  for split in sources.SPLITS:
    assert backward[split] == [(t, s) for s, t in forward[split]]


@pytest.mark.parametrize("name", [TED, WMT])
def test_streaming_gives_the_same_pairs(mocked, name):
  in_memory = tfds_source.load_tfds_splits(name, data_config())
  streamed = tfds_source.load_tfds_splits(name, data_config(bucket_window=4))
  train = streamed["train"]
  assert isinstance(train, sources.PairStream)
  assert list(train) == in_memory["train"]
  assert list(train) == in_memory["train"]  # re-iterable, same order
  assert streamed["valid"] == in_memory["valid"]
  assert streamed["test"] == in_memory["test"]


def test_unknown_feature_lists_features(mocked):
  with pytest.raises(DataError, match=r"no feature 'fr'.*features: pt, en"):
    tfds_source.load_tfds_splits(TED, data_config(tfds_keys="fr,en"))


@pytest.mark.parametrize("field, value, match", [
    ("tfds_keys", "pt", "data.tfds_keys"),
    ("tfds_keys", "pt,en,de", "data.tfds_keys"),
    ("tfds_splits", "train,test", "data.tfds_splits"),
    ("tfds_splits", "train,,test", "data.tfds_splits"),
    ("bucket_window", -1, "data.bucket_window"),
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
