"""Tests for seq2seq_jax.data.tsv_index: the line-offset index of a TSV
training split, its cache, and reading it at random."""

import gzip
import logging
import os
import pickle
import threading

import ml_collections
import numpy as np
import pytest

from seq2seq_jax.data import sources, tsv, tsv_index
from seq2seq_jax.errors import DataError

FRACTIONS = {"valid": 0.1, "test": 0.1}


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
  """The user's cache directory, here: no test writes to the real one."""
  path = tmp_path / "xdg-cache"
  monkeypatch.setenv("XDG_CACHE_HOME", str(path))
  return path


@pytest.fixture
def passes(monkeypatch):
  """The paths of the indexes built (each one a pass over the file)."""
  calls = []
  build = tsv_index._build  # pylint: disable=protected-access

  def counted(path, *args):
    calls.append(path)
    return build(path, *args)

  monkeypatch.setattr(tsv_index, "_build", counted)
  return calls


def _no_pass(*args, **kwargs):
  raise AssertionError("read the file through")


def _config(path, **overrides):
  config = ml_collections.ConfigDict(dict(
      source=f"tsv:{path}", seed=0, valid_path="", test_path="",
      valid_fraction=0.1, test_fraction=0.1))
  config.update(overrides)
  return config


def _corpus(n=600):
  """Lines with what the reader must handle: several targets per source,
  exact duplicates, blank lines, CRLF, extra columns, a long line."""
  lines = [f"source {k // 3}\ttarget {k}" + ("\tCC-BY #1" if k % 5 == 0 else "")
           for k in range(n)]
  lines += lines[10:60]  # exact duplicates, dropped
  lines.insert(7, "")
  lines.insert(20, "   ")
  lines[30] += "\r"
  lines.insert(40, "long " + "x" * 5000 + "\tlong target")
  return "\ufeff" + "\n".join(lines)  # a byte order mark; no final line break


def _write(tmp_path, name, text):
  path = tmp_path / name
  data = text.encode("utf-8")
  path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
  return str(path)


def _expected(path, fractions, seed):
  """The splits as the in-memory path makes them (read_tsv, duplicates
  dropped, split_by_source)."""
  pairs = list(dict.fromkeys(tsv.read_tsv(path)[0]))
  return tsv.split_by_source(pairs, fractions, seed)


@pytest.mark.parametrize("seed, fractions", [
    (0, FRACTIONS), (3, {"valid": 0.2, "test": 0.05}), (1, {"test": 0.3}), (0, {})])
def test_index_gives_the_in_memory_splits(tmp_path, monkeypatch, seed, fractions):
  monkeypatch.setattr(tsv_index, "_BLOCK", 4096)  # lines cross block ends
  path = _write(tmp_path, "d.tsv", _corpus())
  gz = _write(tmp_path, "d.tsv.gz", _corpus())
  expected = _expected(path, fractions, seed)
  assert expected == _expected(gz, fractions, seed)
  for _ in range(2):  # built, then from the cache
    carved = tsv_index.carve(path, seed, fractions)
    train = carved.splits["train"]
    assert isinstance(train, tsv_index.TsvPairs)
    assert len(train) == len(expected["train"])
    assert list(train) == expected["train"]
    assert [train[i] for i in range(len(train))] == expected["train"]
    assert train[np.int64(1)] == expected["train"][1]
    for name in fractions:
      assert carved.splits[name] == expected[name]
    assert carved.sizes == {name: len(pairs) for name, pairs in expected.items()}
    assert carved.total == sum(carved.sizes.values())
  assert ("long " + "x" * 5000, "long target") in expected["train"] + sum(
      (expected[name] for name in fractions), [])


def test_load_splits_of_a_gzipped_file_equals_the_plain_one(tmp_path):
  path = _write(tmp_path, "d.tsv", _corpus())
  gz = _write(tmp_path, "d.tsv.gz", _corpus())
  plain = sources.load_splits(_config(path, seed=5))
  from_gz = sources.load_splits(_config(gz, seed=5))
  assert isinstance(plain["train"], tsv_index.TsvPairs)
  assert isinstance(from_gz["train"], tsv_index.TsvPairs)  # its decompressed copy
  assert {k: list(v) for k, v in plain.items()} == {k: list(v) for k, v in from_gz.items()}
  assert not os.path.exists(gz + ".index.npz")


def test_the_cache_is_reused(tmp_path, passes, monkeypatch):
  path = _write(tmp_path, "d.tsv", _corpus())
  first = sources.load_splits(_config(path))
  cache = path + ".index.npz"
  assert passes == [path] and os.path.exists(cache)
  stamp = os.stat(cache).st_mtime_ns
  first = {k: list(v) for k, v in first.items()}
  with monkeypatch.context() as patch:
    patch.setattr(tsv, "scan_tsv", _no_pass)
    second = sources.load_splits(_config(path))
    assert {k: list(v) for k, v in second.items()} == first
    # Evaluation reads its split from the cache too.
    assert sources.load_splits(_config(path), only=("test",)) == {"test": first["test"]}
  assert passes == [path]
  assert os.stat(cache).st_mtime_ns == stamp


@pytest.mark.parametrize("change", ["append", "touch", "seed", "fractions", "own file"])
def test_the_cache_is_rebuilt_when_the_file_or_carving_changes(tmp_path, passes, change):
  path = _write(tmp_path, "d.tsv", _corpus())
  sources.load_splits(_config(path))
  config = _config(path)
  if change == "append":
    with open(path, "a", encoding="utf-8") as f:
      f.write("\nnew source\tnew target\n")
  elif change == "touch":  # same size and text, newer mtime
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
  elif change == "seed":
    config.seed = 1
  elif change == "fractions":
    config.test_fraction = 0.2
  else:
    config.test_path = _write(tmp_path, "test.tsv", "t\tT\n")
  splits = sources.load_splits(config)
  assert len(passes) == 2
  expected = _expected(path, {k: config[f"{k}_fraction"] for k in ("valid", "test")
                              if not config[f"{k}_path"]}, config.seed)
  assert list(splits["train"]) == expected["train"]
  if change == "append":
    assert ("new source", "new target") in sum((list(v) for v in splits.values()), [])
  sources.load_splits(config)
  assert len(passes) == 2  # and the rebuilt cache is used


def test_a_corrupt_cache_is_rebuilt(tmp_path, passes):
  path = _write(tmp_path, "d.tsv", _corpus())
  (tmp_path / "d.tsv.index.npz").write_bytes(b"not an index")
  splits = sources.load_splits(_config(path))
  assert list(splits["train"]) == _expected(path, FRACTIONS, 0)["train"]
  assert len(passes) == 1
  sources.load_splits(_config(path))
  assert len(passes) == 1


def test_reading_after_the_file_changed_is_an_error(tmp_path):
  path = _write(tmp_path, "d.tsv", _corpus())
  train = sources.load_splits(_config(path))["train"]
  assert train[0] == ("source 0", "target 0")
  with open(path, "a", encoding="utf-8") as f:
    f.write("\nmore\ttext\n")
  for read in (lambda: train[0], lambda: list(train),
               lambda: pickle.loads(pickle.dumps(train))[0]):
    with pytest.raises(DataError) as info:
      read()
    message = str(info.value)
    assert message.startswith(f"{path} changed since it was indexed (size ")
    assert "restart the run" in message and "\n" not in message


def test_a_replaced_file_is_an_error_when_reopened(tmp_path):
  path = _write(tmp_path, "d.tsv", _corpus())
  train = sources.load_splits(_config(path))["train"]
  copy = pickle.loads(pickle.dumps(train))
  train[0]  # opens the original file
  os.replace(_write(tmp_path, "other.tsv", "a\tb\n"), path)
  assert train[0] == ("source 0", "target 0")  # still the file it opened
  with pytest.raises(DataError, match="changed since it was indexed"):
    copy[0]  # opens the new one
  os.remove(path)
  with pytest.raises(DataError, match=f"data file not found: {path}"):
    pickle.loads(pickle.dumps(train))[0]


def test_a_line_that_no_longer_parses_names_its_place(tmp_path):
  path = _write(tmp_path, "d.tsv", "a\tA\nb\tB\nc\tC\n")
  train = tsv_index.carve(path, 0, {}).splits["train"]
  st = os.stat(path)
  with open(path, "r+b") as f:  # same size, and the mtime is put back
    f.seek(4)
    f.write(b"b B")
  os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
  assert train[0] == ("a", "A")
  with pytest.raises(DataError) as info:
    train[1]
  assert str(info.value) == (
      f"{path} changed since it was indexed: the line at byte 4: expected "
      "'source<TAB>target', found 1 column; restart the run, which indexes it again")


def test_a_file_changed_while_it_is_indexed(tmp_path, monkeypatch):
  path = _write(tmp_path, "d.tsv", _corpus())
  scan = tsv.scan_tsv

  def scan_and_append(p, stats=None):
    for k, item in enumerate(scan(p, stats)):
      if k == 1:
        with open(path, "a", encoding="utf-8") as f:
          f.write("\nx\ty")
      yield item

  monkeypatch.setattr(tsv, "scan_tsv", scan_and_append)
  with pytest.raises(DataError, match="changed while it was being indexed"):
    sources.load_splits(_config(path))
  assert not os.path.exists(path + ".index.npz")


@pytest.mark.parametrize("only", [sources.SPLITS, ("test",)])
def test_a_malformed_line_names_file_and_line_at_index_time(tmp_path, only):
  lines = _corpus().split("\n")
  lines[123] = "no tab here"
  path = _write(tmp_path, "bad.tsv", "\n".join(lines))
  with pytest.raises(DataError) as info:
    sources.load_splits(_config(path), only=only)
  assert str(info.value) == f"{path}:124: expected 'source<TAB>target', found 1 column"
  assert not os.path.exists(path + ".index.npz")


def test_evaluation_builds_no_training_index(tmp_path, monkeypatch):
  path = _write(tmp_path, "d.tsv", _corpus())

  def no_build(*args):
    raise AssertionError("built an index")

  with monkeypatch.context() as patch:
    patch.setattr(tsv_index, "_build", no_build)
    held_out = sources.load_splits(_config(path, seed=2), only=("valid", "test"))
  assert not os.path.exists(path + ".index.npz")
  full = sources.load_splits(_config(path, seed=2))
  assert held_out == {"valid": full["valid"], "test": full["test"]}


def test_an_unwritable_data_directory_caches_in_the_user_cache(tmp_path, user_cache, passes,
                                                               caplog, monkeypatch):
  path = _write(tmp_path, "d.tsv", _corpus())
  (tmp_path / "d.tsv.index.npz").mkdir()  # where the cache would go cannot be a file
  beside, elsewhere = tsv_index.cache_paths(path)
  assert beside == path + ".index.npz"
  assert os.path.dirname(elsewhere) == str(user_cache / "seq2seq_jax" / "tsv_index")
  assert os.path.basename(elsewhere).endswith("-d.tsv.index.npz")
  first = sources.load_splits(_config(path))
  assert os.path.isfile(elsewhere)
  second = sources.load_splits(_config(path))
  assert len(passes) == 1
  assert list(second["train"]) == list(first["train"])
  # Nowhere to write: still loads, says so in the log, and the next run indexes again.
  os.remove(elsewhere)
  (tmp_path / "blocked").write_text("a file, not a directory")
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "blocked"))
  with caplog.at_level(logging.WARNING, logger=tsv_index.__name__):
    third = sources.load_splits(_config(path))
  assert list(third["train"]) == list(first["train"])
  assert "cannot cache the index of" in caplog.text
  sources.load_splits(_config(path))
  assert len(passes) == 3


def test_the_user_cache_is_keyed_by_the_absolute_path(tmp_path, monkeypatch):
  (tmp_path / "a").mkdir()
  (tmp_path / "b").mkdir()
  one = tsv_index.cache_paths(str(tmp_path / "a" / "d.tsv"))[1]
  two = tsv_index.cache_paths(str(tmp_path / "b" / "d.tsv"))[1]
  assert one != two
  monkeypatch.chdir(tmp_path / "a")
  assert tsv_index.cache_paths("d.tsv")[1] == one
  monkeypatch.delenv("XDG_CACHE_HOME")
  monkeypatch.setenv("HOME", str(tmp_path))
  assert tsv_index.cache_paths("d.tsv")[1].startswith(
      str(tmp_path / ".cache" / "seq2seq_jax" / "tsv_index") + os.sep)


def test_concurrent_reads(tmp_path):
  path = _write(tmp_path, "d.tsv", _corpus(4000))
  train = sources.load_splits(_config(path))["train"]
  expected = _expected(path, FRACTIONS, 0)["train"]
  errors, barrier = [], threading.Barrier(4)

  def read(worker):
    try:
      barrier.wait()
      order = np.random.default_rng(worker).permutation(len(train))
      for i in order:
        assert train[int(i)] == expected[i]
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)

  threads = [threading.Thread(target=read, args=(k,)) for k in range(4)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors


def test_pickle_round_trip(tmp_path):
  path = _write(tmp_path, "d.tsv", _corpus())
  train = sources.load_splits(_config(path))["train"]
  train[3]  # an open file is not pickled
  copy = pickle.loads(pickle.dumps(train))
  assert copy is not train and len(copy) == len(train)
  assert list(copy) == list(train) and copy[3] == train[3]
  assert repr(copy) == repr(train) == f"TsvPairs({path!r}, {len(train)} pairs)"
  train.close()
  assert train[3] == copy[3]  # reopened


def test_index_bounds(tmp_path):
  path = _write(tmp_path, "d.tsv", "a\tA\nb\tB\n")
  train = tsv_index.carve(path, 0, {}).splits["train"]
  assert len(train) == 2 and train[1] == ("b", "B")
  for bad in (2, -1, -3, 10**20):
    with pytest.raises(IndexError):
      train[bad]
  with pytest.raises(TypeError):
    train[0.0]
  assert list(reversed(train)) == [("b", "B"), ("a", "A")]
  assert ("a", "A") in train


def test_gzip_is_indexed_in_a_cached_decompressed_copy(tmp_path, user_cache, monkeypatch):
  gz = _write(tmp_path, "d.tsv.gz", _corpus())
  splits = sources.load_splits(_config(gz))
  assert isinstance(splits["train"], tsv_index.TsvPairs)  # random access, memory = the index
  assert {k: list(v) for k, v in splits.items()} == _expected(gz, FRACTIONS, 0)
  assert sorted(os.listdir(tmp_path)) == ["d.tsv.gz", "xdg-cache"]  # nothing beside the file
  copy = tsv_index.decompressed(gz, build=False)
  assert copy.startswith(str(user_cache)) and os.path.isfile(copy)
  with monkeypatch.context() as patch:  # the copy and its index are reused: no pass
    patch.setattr(tsv, "open_lines", _no_pass)
    patch.setattr(tsv, "scan_tsv", _no_pass)
    assert list(sources.load_splits(_config(gz))["train"]) == list(splits["train"])
  # A new file under the same name: a new copy.
  _write(tmp_path, "d.tsv.gz", "new\tNEW\nother\tOTHER\n")
  os.utime(gz, ns=(1, 1))
  again = sources.load_splits(_config(gz, valid_fraction=0.0, test_fraction=0.0))
  assert list(again["train"]) == [("new", "NEW"), ("other", "OTHER")]


def test_a_malformed_line_in_a_gzipped_file_names_the_file_and_line(tmp_path, user_cache):
  gz = _write(tmp_path, "d.tsv.gz", "a\tA\nb\tB\nno tab here\n")
  with pytest.raises(DataError) as info:
    sources.load_splits(_config(gz))
  assert str(info.value) == f"{gz}:3: expected 'source<TAB>target', found 1 column"
  assert tsv_index.decompressed(gz, build=False) is None
  assert os.listdir(user_cache / "seq2seq_jax" / "tsv_index") == []  # no half-made copy


def test_gzip_without_a_writable_cache_is_read_into_memory(tmp_path, monkeypatch, caplog):
  gz = _write(tmp_path, "d.tsv.gz", _corpus())
  (tmp_path / "blocked").write_text("a file where the cache directory would go")
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "blocked"))
  with caplog.at_level(logging.WARNING, logger=tsv_index.__name__):
    splits = sources.load_splits(_config(gz))
  assert "cannot keep a decompressed copy of" in caplog.text
  assert isinstance(splits["train"], list)
  assert splits == _expected(gz, FRACTIONS, 0)


def test_evaluation_of_a_gzipped_file_decompresses_nothing(tmp_path, user_cache):
  gz = _write(tmp_path, "d.tsv.gz", _corpus())
  test = sources.load_splits(_config(gz), only=("test",))["test"]
  assert test == _expected(gz, FRACTIONS, 0)["test"]
  assert not os.path.exists(user_cache)
