"""Tests for seq2seq_jax.data.sources."""

import gzip

import ml_collections
import pytest

from seq2seq_jax.data import sources, tasks
from seq2seq_jax.errors import ConfigError, DataError


def _write(tmp_path, name, content: bytes):
  path = tmp_path / name
  path.write_bytes(content)
  return str(path)


def _tsv_config(path, **overrides):
  config = ml_collections.ConfigDict(dict(
      source=f"tsv:{path}", seed=0, valid_path="", test_path="",
      valid_fraction=0.1, test_fraction=0.1))
  config.update(overrides)
  return config


def test_reads_pairs_ignoring_extra_columns(tmp_path):
  path = _write(tmp_path, "d.tsv", (
      "Go.\tVa !\tCC-BY 2.0 (France) Attribution: tatoeba.org #2877272\r\n"
      "Hi.\tSalut !\n"
      "Run!\tCours\u202f!\t#906328\n").encode("utf-8"))
  pairs, stats = sources.read_tsv(path)
  assert pairs == [
      ("Go.", "Va !"), ("Hi.", "Salut !"), ("Run!", "Cours\u202f!")]
  assert stats["pairs"] == 3 and stats["lines"] == 3
  assert stats["extra_column_lines"] == 2


def test_crlf_line_endings(tmp_path):
  path = _write(tmp_path, "d.tsv", b"a\tb\r\nc\td \r\n")
  assert sources.read_tsv(path)[0] == [("a", "b"), ("c", "d")]
  path = _write(tmp_path, "e.tsv", b"a\tb\r\nc\t\r\n")
  with pytest.raises(DataError, match=":2: empty target"):
    sources.read_tsv(path)


def test_blank_lines_skipped_and_counted(tmp_path):
  path = _write(tmp_path, "d.tsv", b"\na\tb\n   \n\t\nc\td\n\n")
  pairs, stats = sources.read_tsv(path)
  assert pairs == [("a", "b"), ("c", "d")]
  assert stats["blank_lines"] == 4
  assert stats["lines"] == 6


def test_byte_order_mark_is_not_part_of_the_source(tmp_path):
  path = _write(tmp_path, "d.tsv", "\ufeffa\tb\n".encode("utf-8"))
  assert sources.read_tsv(path)[0] == [("a", "b")]


@pytest.mark.parametrize("content,lineno,problem", [
    (b"a\tb\nno tab here\nc\td\n", 2,
     "expected 'source<TAB>target', found 1 column"),
    (b"a\tb\nc\td\nx\t  \n", 3, "empty target"),
    (b"\t y\n", 1, "empty source"),
])
def test_malformed_line_names_file_and_line(tmp_path, content, lineno, problem):
  path = _write(tmp_path, "bad.tsv", content)
  with pytest.raises(DataError) as info:
    sources.read_tsv(path)
  assert str(info.value) == f"{path}:{lineno}: {problem}"


def test_missing_file(tmp_path):
  path = str(tmp_path / "missing.tsv")
  with pytest.raises(DataError) as info:
    sources.read_tsv(path)
  assert str(info.value) == f"data file not found: {path}"


def test_invalid_utf8_names_line(tmp_path):
  path = _write(tmp_path, "bad.tsv", b"a\tb\nc\td\n\xff\xfe\tx\n")
  with pytest.raises(DataError) as info:
    sources.read_tsv(path)
  assert str(info.value) == f"{path}:3: not valid UTF-8"


def test_reads_gzip(tmp_path):
  path = str(tmp_path / "d.tsv.gz")
  with gzip.open(path, "wb") as f:
    f.write("été\tsummer\n\nhiver\twinter\tx\n".encode("utf-8"))
  pairs, stats = sources.read_tsv(path)
  assert pairs == [("été", "summer"), ("hiver", "winter")]
  assert stats["blank_lines"] == 1


def test_corrupt_gzip(tmp_path):
  path = _write(tmp_path, "d.tsv.gz", b"this is not gzip")
  with pytest.raises(DataError, match="d.tsv.gz"):
    sources.read_tsv(path)


def test_load_builtin_matches_make_task():
  config = ml_collections.ConfigDict(dict(
      source="builtin:reverse", seed=4, num_train=40, num_valid=5,
      num_test=6, min_len=None, max_len=None))
  assert sources.load_splits(config) == tasks.make_task(
      "reverse", 4, 40, 5, 6)


def test_load_builtin_zero_lengths_mean_task_default():
  config = ml_collections.ConfigDict(dict(
      source="builtin:date", seed=1, num_train=20, num_valid=5,
      num_test=5, min_len=0, max_len=0))
  assert sources.load_splits(config) == tasks.make_task("date", 1, 20, 5, 5)
  config.source = "builtin:sort"
  config.max_len = 6
  splits = sources.load_splits(config)
  assert splits == tasks.make_task("sort", 1, 20, 5, 5, None, 6)
  assert max(len(s) for s, _ in splits["train"]) <= 6


@pytest.mark.parametrize(
    "value", ["xyz", "builtin:nope", "tsv:", "hf:wmt14", 3])
def test_bad_source_string(value):
  config = ml_collections.ConfigDict(dict(source=value))
  with pytest.raises(ConfigError) as info:
    sources.load_splits(config)
  message = str(info.value)
  assert message.startswith("data.source must be 'builtin:<task>' (tasks: "
                            "date, reverse, copy, sort, addition) or "
                            "'tsv:<path>', got ")
  assert message.endswith(repr(value))


def _numbered_pairs(n):
  # Sources repeat in pairs of two lines to check they are kept together.
  return [(f"s{k // 2}", f"t{k}") for k in range(n)]


def test_tsv_split_by_fraction(tmp_path):
  pairs = _numbered_pairs(400)
  lines = [f"{s}\t{t}" for s, t in pairs]
  lines += lines[:30]  # exact duplicates are dropped
  path = _write(tmp_path, "d.tsv", "\n".join(lines).encode("utf-8"))
  splits = sources.load_splits(_tsv_config(path, seed=3))
  assert sorted(sum(splits.values(), [])) == sorted(pairs)
  # 200 distinct sources, 10% each.
  assert len({s for s, _ in splits["valid"]}) == 20
  assert len({s for s, _ in splits["test"]}) == 20
  by_split = [{s for s, _ in splits[k]} for k in ("train", "valid", "test")]
  assert not (by_split[0] & by_split[1] or by_split[0] & by_split[2]
              or by_split[1] & by_split[2])
  for split in splits.values():
    assert split == sorted(split, key=pairs.index)  # file order kept
  assert sources.load_splits(_tsv_config(path, seed=3)) == splits
  assert sources.load_splits(_tsv_config(path, seed=4)) != splits


def test_tsv_explicit_paths(tmp_path):
  main = _write(tmp_path, "train.tsv", b"a\tA\nb\tB\nc\tC\n")
  valid = _write(tmp_path, "valid.tsv", b"v\tV\n")
  test = _write(tmp_path, "test.tsv", b"t\tT\n")
  splits = sources.load_splits(_tsv_config(
      main, valid_path=valid, test_path=test, valid_fraction=0.5))
  assert splits == {"train": [("a", "A"), ("b", "B"), ("c", "C")],
                    "valid": [("v", "V")], "test": [("t", "T")]}
  # Only test is carved off when only valid has a file.
  splits = sources.load_splits(_tsv_config(
      main, valid_path=valid, test_fraction=0.3))
  assert splits["valid"] == [("v", "V")]
  assert len(splits["test"]) == 1 and len(splits["train"]) == 2


@pytest.mark.parametrize("overrides,field", [
    (dict(valid_fraction=1.0), "data.valid_fraction"),
    (dict(test_fraction=-0.1), "data.test_fraction"),
    (dict(valid_fraction=0.6, test_fraction=0.5),
     "data.valid_fraction + data.test_fraction"),
    (dict(seed=-2), "data.seed"),
])
def test_tsv_bad_fractions(tmp_path, overrides, field):
  path = _write(tmp_path, "d.tsv", b"a\tA\nb\tB\n")
  with pytest.raises(ConfigError, match=field.replace("+", r"\+")):
    sources.load_splits(_tsv_config(path, **overrides))


def test_tsv_too_small_to_split(tmp_path):
  path = _write(tmp_path, "d.tsv", b"a\tA\nb\tB\n")
  with pytest.raises(DataError, match="nothing for training"):
    sources.load_splits(_tsv_config(path))


def test_tsv_empty_file(tmp_path):
  path = _write(tmp_path, "d.tsv", b"\n\n")
  with pytest.raises(DataError, match="no source<TAB>target pairs"):
    sources.load_splits(_tsv_config(path))
