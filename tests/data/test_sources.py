"""Tests for seq2seq_jax.data.sources."""

import gzip

import ml_collections
import pytest

from seq2seq_jax.data import sources, tasks, tsv, tsv_index
from seq2seq_jax.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
  """The user's cache directory (TSV indexes, gzip copies), here: no test
  writes to the real one."""
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def _write(tmp_path, name, content: bytes):
  path = tmp_path / name
  path.write_bytes(content)
  return str(path)


def _lists(splits):
  """The splits as lists (a TSV training split is a `TsvPairs`)."""
  return {name: list(pairs) for name, pairs in splits.items()}


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
  pairs, stats = tsv.read_tsv(path)
  assert pairs == [
      ("Go.", "Va !"), ("Hi.", "Salut !"), ("Run!", "Cours\u202f!")]
  assert stats["pairs"] == 3 and stats["lines"] == 3
  assert stats["extra_column_lines"] == 2


def test_crlf_line_endings(tmp_path):
  path = _write(tmp_path, "d.tsv", b"a\tb\r\nc\td \r\n")
  assert tsv.read_tsv(path)[0] == [("a", "b"), ("c", "d")]
  path = _write(tmp_path, "e.tsv", b"a\tb\r\nc\t\r\n")
  with pytest.raises(DataError, match=":2: empty target"):
    tsv.read_tsv(path)


def test_blank_lines_skipped_and_counted(tmp_path):
  path = _write(tmp_path, "d.tsv", b"\na\tb\n   \n\t\nc\td\n\n")
  pairs, stats = tsv.read_tsv(path)
  assert pairs == [("a", "b"), ("c", "d")]
  assert stats["blank_lines"] == 4
  assert stats["lines"] == 6


def test_byte_order_mark_is_not_part_of_the_source(tmp_path):
  path = _write(tmp_path, "d.tsv", "\ufeffa\tb\n".encode("utf-8"))
  assert tsv.read_tsv(path)[0] == [("a", "b")]


@pytest.mark.parametrize("content,lineno,problem", [
    (b"a\tb\nno tab here\nc\td\n", 2,
     "expected 'source<TAB>target', found 1 column"),
    (b"a\tb\nc\td\nx\t  \n", 3, "empty target"),
    (b"\t y\n", 1, "empty source"),
])
def test_malformed_line_names_file_and_line(tmp_path, content, lineno, problem):
  path = _write(tmp_path, "bad.tsv", content)
  with pytest.raises(DataError) as info:
    tsv.read_tsv(path)
  assert str(info.value) == f"{path}:{lineno}: {problem}"


def test_missing_file(tmp_path):
  path = str(tmp_path / "missing.tsv")
  with pytest.raises(DataError) as info:
    tsv.read_tsv(path)
  assert str(info.value) == f"data file not found: {path}"


def test_invalid_utf8_names_line(tmp_path):
  path = _write(tmp_path, "bad.tsv", b"a\tb\nc\td\n\xff\xfe\tx\n")
  with pytest.raises(DataError) as info:
    tsv.read_tsv(path)
  assert str(info.value) == f"{path}:3: not valid UTF-8"


def test_reads_gzip(tmp_path):
  path = str(tmp_path / "d.tsv.gz")
  with gzip.open(path, "wb") as f:
    f.write("été\tsummer\n\nhiver\twinter\tx\n".encode("utf-8"))
  pairs, stats = tsv.read_tsv(path)
  assert pairs == [("été", "summer"), ("hiver", "winter")]
  assert stats["blank_lines"] == 1


def test_corrupt_gzip(tmp_path):
  path = _write(tmp_path, "d.tsv.gz", b"this is not gzip")
  with pytest.raises(DataError, match="d.tsv.gz"):
    tsv.read_tsv(path)


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
                            "date, reverse, copy, sort, addition), 'cmudict', "
                            "'tsv:<path>' or 'tfds:<name>[/<config>]', got ")
  assert message.endswith(repr(value))


def _numbered_pairs(n):
  # Sources repeat in pairs of two lines to check they are kept together.
  return [(f"s{k // 2}", f"t{k}") for k in range(n)]


def test_tsv_split_by_fraction(tmp_path):
  pairs = _numbered_pairs(400)
  lines = [f"{s}\t{t}" for s, t in pairs]
  lines += lines[:30]  # exact duplicates are dropped
  path = _write(tmp_path, "d.tsv", "\n".join(lines).encode("utf-8"))
  splits = _lists(sources.load_splits(_tsv_config(path, seed=3)))
  assert sorted(sum(splits.values(), [])) == sorted(pairs)
  # 200 distinct sources, each held out with probability 10% per split.
  assert 8 <= len({s for s, _ in splits["valid"]}) <= 35
  assert 8 <= len({s for s, _ in splits["test"]}) <= 35
  by_split = [{s for s, _ in splits[k]} for k in ("train", "valid", "test")]
  assert not (by_split[0] & by_split[1] or by_split[0] & by_split[2]
              or by_split[1] & by_split[2])
  for split in splits.values():
    assert split == sorted(split, key=pairs.index)  # file order kept
  assert _lists(sources.load_splits(_tsv_config(path, seed=3))) == splits
  assert _lists(sources.load_splits(_tsv_config(path, seed=4))) != splits


def test_split_rule_is_a_fixed_hash_of_seed_and_source():
  # Pinned: changing the rule would silently change every tsv test set.
  assert tsv.source_hash("Go.", 0) == 0.9798380682018557
  assert tsv.source_hash("Go.", 1) == 0.31210326939708843
  fractions = {"valid": 0.25, "test": 0.25}
  # test takes [0, 0.25), valid [0.25, 0.5), train the rest.
  assert tsv.split_of("Go.", 0, fractions) == "train"
  assert tsv.split_of("Go.", 1, fractions) == "valid"
  counts = {"train": 0, "valid": 0, "test": 0}
  for k in range(20_000):
    counts[tsv.split_of(f"sentence {k}", 7, fractions)] += 1
  assert abs(counts["valid"] - 5000) < 300 and abs(counts["test"] - 5000) < 300


def test_split_of_a_sentence_does_not_depend_on_the_rest_of_the_file():
  pairs = _numbered_pairs(300)
  fractions = {"valid": 0.1, "test": 0.1}
  small = tsv.split_by_source(pairs[:100], fractions, seed=5)
  large = tsv.split_by_source(pairs, fractions, seed=5)
  for name in small:
    assert large[name][:len(small[name])] == small[name]
    added = large[name][len(small[name]):]
    assert all(pair not in pairs[:100] for pair in added)


def test_tsv_explicit_paths(tmp_path):
  main = _write(tmp_path, "train.tsv", b"a\tA\nb\tB\nc\tC\n")
  valid = _write(tmp_path, "valid.tsv", b"v\tV\n")
  test = _write(tmp_path, "test.tsv", b"t\tT\n")
  splits = _lists(sources.load_splits(_tsv_config(
      main, valid_path=valid, test_path=test, valid_fraction=0.5)))
  assert splits == {"train": [("a", "A"), ("b", "B"), ("c", "C")],
                    "valid": [("v", "V")], "test": [("t", "T")]}
  # Only test is carved off when only valid has a file.
  splits = _lists(sources.load_splits(_tsv_config(
      main, valid_path=valid, test_fraction=0.3, seed=6)))
  assert splits["valid"] == [("v", "V")]
  assert splits["test"] == [("b", "B")]
  assert splits["train"] == [("a", "A"), ("c", "C")]


def test_loading_only_the_held_out_split_reads_nothing_else(tmp_path):
  """Evaluation loads the split it scores: a file that holds only other
  splits is never opened (here: removed), and a carved split equals its
  part of a full load."""
  main = _write(tmp_path, "train.tsv", b"a\tA\nb\tB\nc\tC\n")
  test = _write(tmp_path, "test.tsv", b"t\tT\n")
  config = _tsv_config(main, test_path=test, valid_path=test)
  (tmp_path / "train.tsv").unlink()
  assert sources.load_splits(config, only=("test",)) == {"test": [("t", "T")]}
  with pytest.raises(DataError):  # the full load does need it
    sources.load_splits(config)
  pairs = _numbered_pairs(400)
  lines = [f"{s}\t{t}" for s, t in pairs] * 2  # duplicates, dropped by both ways
  path = _write(tmp_path, "d.tsv", "\n".join(lines).encode("utf-8"))
  full = sources.load_splits(_tsv_config(path, seed=3))
  only = sources.load_splits(_tsv_config(path, seed=3), only=("test", "valid"))
  assert set(only) == {"test", "valid"} and full["test"] and full["valid"]
  assert only == {"test": full["test"], "valid": full["valid"]}
  built = sources.load_splits(ml_collections.ConfigDict(dict(
      source="builtin:copy", seed=1, num_train=20, num_valid=5, num_test=7, min_len=0,
      max_len=0)), only=("test",))
  assert list(built) == ["test"] and len(built["test"]) == 7
  with pytest.raises(ValueError, match="unknown splits"):
    sources.load_splits(config, only=("tset",))


def test_fraction_that_selects_nothing(tmp_path):
  path = _write(tmp_path, "d.tsv", b"a\tA\nb\tB\nc\tC\n")
  with pytest.raises(DataError) as info:
    sources.load_splits(_tsv_config(path, valid_fraction=0.01, seed=0))
  assert str(info.value).startswith(
      f"{path}: data.valid_fraction=0.01 of 3 pairs selected no valid pairs")


def _lines(n):
  # 3 targets per source, as Tatoeba has for common sentences.
  return [f"source {k // 3}\ttarget {k}\tCC-BY 2.0 #{k}" for k in range(n)]


@pytest.mark.parametrize("name", ["d.tsv", "d.tsv.gz"])
def test_stream_tsv_reads_line_by_line(tmp_path, name):
  content = "\n".join(_lines(1000) + ["no tab on line 1001"]).encode("utf-8")
  path = str(tmp_path / name)
  if name.endswith(".gz"):
    with gzip.open(path, "wb") as f:
      f.write(content)
  else:
    _write(tmp_path, name, content)
  stats = {}
  stream = tsv.stream_tsv(path, stats)
  assert not stats  # the file is not opened before a pair is asked for
  assert next(stream) == ("source 0", "target 0")
  assert stats["lines"] == 1
  for k, pair in zip(range(1, 1000), stream):
    assert pair == (f"source {k // 3}", f"target {k}")
  with pytest.raises(DataError) as info:
    next(stream)
  assert str(info.value) == (
      f"{path}:1001: expected 'source<TAB>target', found 1 column")


def _write_maybe_gzip(tmp_path, name, content: bytes):
  path = str(tmp_path / name)
  if name.endswith(".gz"):
    with gzip.open(path, "wb") as f:
      f.write(content)
  else:
    _write(tmp_path, name, content)
  return path


def _in_memory_splits(path, fractions, seed):
  """The splits as the in-memory path makes them: every pair read, exact
  duplicates dropped, carved by source."""
  return tsv.split_by_source(list(dict.fromkeys(tsv.read_tsv(path)[0])), fractions, seed)


@pytest.mark.parametrize("name", ["d.tsv", "d.tsv.gz"])
def test_every_split_is_random_access(tmp_path, name):
  lines = _lines(600)
  lines.insert(100, "")  # blank lines are skipped
  path = _write_maybe_gzip(tmp_path, name, "\n".join(lines).encode("utf-8"))
  splits = sources.load_splits(_tsv_config(path, seed=2))
  expected = _in_memory_splits(path, {"valid": 0.1, "test": 0.1}, seed=2)
  train = splits["train"]
  # A gzipped file too: through its decompressed copy.
  assert isinstance(train, tsv_index.TsvPairs)
  assert isinstance(splits["valid"], list) and isinstance(splits["test"], list)
  assert splits["valid"] == expected["valid"] and splits["test"] == expected["test"]
  assert len(train) == len(expected["train"])
  assert [train[i] for i in range(len(train))] == expected["train"]
  assert list(train) == expected["train"]
  assert list(train) == expected["train"]  # iterable again, in the same order
  with pytest.raises(IndexError):
    train[len(train)]
  with pytest.raises(IndexError):  # only lists count from the end
    train[-1]
  assert len(splits["valid"]) % 3 == 0  # a source's 3 pairs stay together
  held_out = {s for s, _ in splits["valid"] + splits["test"]}
  assert not held_out & {s for s, _ in train}


@pytest.mark.parametrize("name", ["d.tsv", "d.tsv.gz"])
def test_duplicate_pairs_are_dropped_from_every_split(tmp_path, name):
  lines = _lines(300)
  path = _write_maybe_gzip(tmp_path, name, "\n".join(lines + lines).encode("utf-8"))
  once = _write(tmp_path, "once.tsv", "\n".join(lines).encode("utf-8"))
  twice = sources.load_splits(_tsv_config(path))
  single = sources.load_splits(_tsv_config(once))
  for split in sources.SPLITS:
    assert list(twice[split]) == list(single[split])


@pytest.mark.parametrize("name", ["train.tsv", "train.tsv.gz"])
def test_training_file_with_separate_held_out_files(tmp_path, name):
  main = _write_maybe_gzip(tmp_path, name, b"a\tA\nb\tB\na\tA\n")
  valid = _write(tmp_path, "valid.tsv", b"v\tV\n")
  test = _write(tmp_path, "test.tsv", b"t\tT\n")
  splits = sources.load_splits(_tsv_config(main, valid_path=valid, test_path=test))
  assert list(splits["train"]) == [("a", "A"), ("b", "B")]
  assert len(splits["train"]) == 2 and splits["train"][1] == ("b", "B")
  assert splits["valid"] == [("v", "V")] and splits["test"] == [("t", "T")]


@pytest.mark.parametrize("only", [sources.SPLITS, ("valid",)])
def test_malformed_lines_are_reported_before_training(tmp_path, only):
  lines = _lines(50)
  lines[41] = "source 99\t"
  path = _write(tmp_path, "d.tsv", "\n".join(lines).encode("utf-8"))
  with pytest.raises(DataError) as info:
    sources.load_splits(_tsv_config(path), only=only)
  assert str(info.value) == f"{path}:42: empty target"
  with pytest.raises(DataError, match="data file not found"):
    sources.load_splits(_tsv_config(str(tmp_path / "nope.tsv")), only=only)
  with pytest.raises(DataError, match="data file is a directory"):
    sources.load_splits(_tsv_config(str(tmp_path)), only=only)
  path = _write(tmp_path, "e.tsv", b"\n")
  with pytest.raises(DataError, match="no source<TAB>target pairs"):
    sources.load_splits(_tsv_config(path), only=only)


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
