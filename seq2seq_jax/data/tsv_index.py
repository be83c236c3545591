"""Random access to the training split of a TSV file: a line-offset index.

A TSV corpus (`data.source = "tsv:<path>"`) may be larger than memory, yet
the input pipeline reads its training split at random (a global shuffle
each epoch). So the split is held as the byte offsets of its lines, a NumPy
int64 array (8 bytes a line, not the text), and `TsvPairs[i]` reads and
parses line i again when it is asked for.

The index is built by one pass over the file, which parses every line (so a
malformed line is a DataError naming file:line before training starts),
carves the held-out splits off by `tsv.split_of` and drops exact
duplicate pairs as the in-memory path does. It is cached, with the held-out
splits' offsets, in `<file>.index.npz` next to the file, or, when that
cannot be written, in `$XDG_CACHE_HOME/seq2seq_jax/tsv_index/` (default
~/.cache) under a hash of the file's absolute path. The cache records the
file's size and mtime_ns and the carving parameters (seed, fractions, and so
which splits have their own files); any mismatch rebuilds it. A cache that
cannot be written costs the next run another pass, nothing else.

A file that changes after it was indexed (size or mtime) is a DataError when
it is read ("... changed since it was indexed ...; restart the run"): the
offsets would point into other text.

A gzip-compressed file has no random access (reaching line i means
decompressing everything before it). Its training split is therefore read
from a decompressed copy (`decompressed`): written once, with every line
checked (errors name the .gz file and line), into the user's cache
directory, recorded against the .gz's size and mtime, and indexed like any
other file. Memory stays the index; the disk holds the text twice.
"""

import array
import collections.abc
import contextlib
import hashlib
import json
import logging
import operator
import os
import tempfile
import threading
import weakref
from typing import Iterator, Optional

import numpy as np

from seq2seq_jax.data import tsv
from seq2seq_jax.errors import DataError

_log = logging.getLogger(__name__)

# Bumped when the cache's layout or the carving it records changes.
_VERSION = 1
# Bytes read at a time: a line's first read, and a block when iterating.
_LINE_READ = 1024
_BLOCK = 1 << 20
# Offsets turned into Python ints at a time when iterating.
_ITER_CHUNK = 1 << 16


class TsvPairs(collections.abc.Sequence):
  """Some lines of an uncompressed TSV file as (source, target) pairs.

  `pairs[i]` reads the line at `offsets[i]` (with `os.pread` on one file
  descriptor, so any number of threads may read at once) and parses it as
  `tsv.read_tsv` does; iteration reads the lines in order, a block at a
  time. Negative and out-of-range indices raise IndexError.

  Every read first checks (`os.fstat`) that the file still has the size and
  mtime it had when it was indexed; if not, DataError. Pickling keeps the
  path, the offsets and that stat; the file is reopened on the first read.
  """

  def __init__(self, path: str, offsets: np.ndarray, size: int, mtime_ns: int):
    """Args:
      path: the file, as messages name it.
      offsets: ascending byte offsets of the lines' starts.
      size, mtime_ns: the file's `os.stat` when the offsets were taken.
    """
    self.path = path
    self.offsets = np.asarray(offsets, np.int64)
    self.size, self.mtime_ns = int(size), int(mtime_ns)
    self._init_reader()

  def _init_reader(self):
    self._abspath = os.path.abspath(self.path)
    self._lock = threading.Lock()
    self._fd = None
    self._closer = None

  def __getstate__(self) -> dict:
    # The absolute path too: the process that unpickles may have another cwd.
    return {"path": self.path, "abspath": self._abspath, "offsets": self.offsets,
            "size": self.size, "mtime_ns": self.mtime_ns}

  def __setstate__(self, state: dict):
    abspath = state.pop("abspath")
    self.__init__(**state)
    self._abspath = abspath

  def __len__(self) -> int:
    return len(self.offsets)

  def __repr__(self) -> str:
    return f"TsvPairs({self.path!r}, {len(self)} pairs)"

  def __getitem__(self, index) -> tuple:
    i = operator.index(index)  # TypeError for slices and floats
    if not 0 <= i < len(self.offsets):
      raise IndexError(f"index {index} out of range for {self!r}")
    fd = self._file()
    self._check(fd)
    offset = int(self.offsets[i])
    return self._parse(_read_line(fd, offset, self.path), offset)

  def __iter__(self) -> Iterator[tuple]:
    fd = self._file()
    block, start = b"", 0
    for first in range(0, len(self.offsets), _ITER_CHUNK):
      for offset in self.offsets[first:first + _ITER_CHUNK].tolist():
        rel = offset - start
        end = block.find(b"\n", rel) if 0 <= rel < len(block) else -1
        if end < 0:  # the line is not whole in the block: read the next one
          self._check(fd)
          block, start, rel = _pread(fd, _BLOCK, offset, self.path), offset, 0
          end = block.find(b"\n")
        if end >= 0:
          raw = block[rel:end + 1]
        elif len(block) < _BLOCK:
          raw = block  # the last line, without a line break
        else:
          raw = _read_line(fd, offset, self.path)  # longer than a block
        yield self._parse(raw, offset)

  def close(self):
    """Closes the file (a later read opens it again); not while another
    thread reads."""
    with self._lock:
      if self._closer is not None:
        self._closer()
      self._fd = self._closer = None

  def _file(self) -> int:
    fd = self._fd
    if fd is None:
      with self._lock:
        if self._fd is None:
          try:
            fd = os.open(self._abspath, os.O_RDONLY)
          except FileNotFoundError:
            raise DataError(f"data file not found: {self.path} (it was indexed when the run "
                            "started)") from None
          except OSError as e:
            raise DataError(f"cannot read data file {self.path}: {e}") from None
          self._closer = weakref.finalize(self, os.close, fd)
          self._fd = fd
        fd = self._fd
    return fd

  def _check(self, fd: int):
    st = os.fstat(fd)
    if (st.st_size, st.st_mtime_ns) != (self.size, self.mtime_ns):
      raise DataError(
          f"{self.path} changed since it was indexed (size {self.size} -> {st.st_size} bytes, "
          f"mtime_ns {self.mtime_ns} -> {st.st_mtime_ns}); restart the run, which indexes it "
          "again")

  def _parse(self, raw: bytes, offset: int) -> tuple:
    try:
      pair = tsv.parse_line(raw, f"the line at byte {offset}", offset == 0)
    except DataError as e:
      raise DataError(f"{self.path} changed since it was indexed: {e}; restart the run, which "
                      "indexes it again") from None
    if pair is None:
      raise DataError(f"{self.path} changed since it was indexed: the line at byte {offset} is "
                      "blank now; restart the run, which indexes it again")
    return pair


def _pread(fd: int, n: int, offset: int, path: str) -> bytes:
  try:
    return os.pread(fd, n, offset)
  except OSError as e:
    raise DataError(f"cannot read data file {path}: {e}") from None


def _read_line(fd: int, offset: int, path: str) -> bytes:
  """The bytes of the line that starts at `offset`, line break included."""
  buf = _pread(fd, _LINE_READ, offset, path)
  searched, want = 0, _LINE_READ
  while True:
    end = buf.find(b"\n", searched)
    if end >= 0:
      return buf[:end + 1]
    if len(buf) < want:
      return buf  # the end of the file
    searched = len(buf)
    more = _pread(fd, want, offset + len(buf), path)
    buf += more
    want += len(more)
    if not more:
      return buf


def cache_paths(path: str) -> list:
  """Where the index of `path` is cached, in the order they are tried:
  `<path>.index.npz` beside it, then the user's cache directory
  ($XDG_CACHE_HOME or ~/.cache)/seq2seq_jax/tsv_index/<hash>-<name>.index.npz,
  the hash being of the absolute path."""
  return [os.path.abspath(path) + ".index.npz", _in_user_cache(path, ".index.npz")]


def _in_user_cache(path: str, suffix: str) -> str:
  """($XDG_CACHE_HOME or ~/.cache)/seq2seq_jax/tsv_index/<hash>-<name><suffix>,
  the hash being of the absolute path."""
  abspath = os.path.abspath(path)
  root = os.environ.get("XDG_CACHE_HOME", "")
  if not os.path.isabs(root):  # unset, empty or relative: the spec's default
    root = os.path.join(os.path.expanduser("~"), ".cache")
  digest = hashlib.sha256(os.fsencode(abspath)).hexdigest()[:16]
  return os.path.join(root, "seq2seq_jax", "tsv_index",
                      f"{digest}-{os.path.basename(abspath)}{suffix}")


def decompressed(path: str, build: bool = True) -> Optional[str]:
  """The path of an uncompressed copy of the gzipped TSV file `path`, made
  by one pass (each line parsed, so a malformed one is a DataError naming
  `path:line`) unless a copy of this very file (same size and mtime) is
  cached: ($XDG_CACHE_HOME or ~/.cache)/seq2seq_jax/tsv_index/<hash>-<name>.tsv.
  None with build=False instead of a pass, and when the copy cannot be
  written (a warning; the caller then reads the file into memory)."""
  st = _stat(path)
  copy = _in_user_cache(path, ".tsv")
  record = {"source": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
  if _recorded(copy, record):
    return copy
  if not build:
    return None
  _log.info("decompressing %s (%d bytes) once, for random access", path, st.st_size)

  def write_copy(out):
    for lineno, raw in enumerate(tsv.open_lines(path), start=1):
      tsv.parse_line(raw, f"{path}:{lineno}", lineno == 1)
      out.write(raw)
    _check_unchanged(path, st, "read")

  try:
    with contextlib.suppress(FileNotFoundError):
      os.remove(copy + ".json")  # a record never describes another copy
    _write_atomically(copy, write_copy)
    record["copy_size"] = os.path.getsize(copy)
    _write_atomically(copy + ".json", lambda f: f.write(json.dumps(record).encode("utf-8")))
  except OSError as e:  # the cache, not the data (read errors are DataErrors)
    _log.warning("cannot keep a decompressed copy of %s in %s (%s); reading it into memory",
                 path, os.path.dirname(copy), e)
    return None
  return copy


def _recorded(copy: str, record: dict) -> bool:
  """Whether `copy` is the one its JSON record says was made from the file
  `record` describes."""
  try:
    with open(copy + ".json", encoding="utf-8") as f:
      return json.load(f) == dict(record, copy_size=os.path.getsize(copy))
  except (OSError, ValueError):  # no copy or record, or a record this module did not write
    return False


def carve(path: str, seed: int, fractions: dict, build: bool = True) -> Optional["tsv.Carved"]:
  """The splits of an uncompressed TSV file, from its cached index or from
  one pass that builds and caches it.

  Args:
    path: a regular file.
    seed, fractions: the carving (`tsv.split_of`); fractions names the
      held-out splits taken from this file ({} when both have their own).
    build: False: return None rather than make a pass when there is no
      valid cache (evaluation then collects only the held-out pairs).

  Returns:
    `tsv.Carved`: splits "train" (a `TsvPairs`, when built or `build`)
    and the held-out ones (lists); sizes and total count distinct pairs.

  Raises:
    DataError: as `tsv.read_tsv` for the first malformed line, or the
      file changed while it was read.
  """
  st = _stat(path)
  key = _key(seed, fractions)
  cached = _read_cache(path, st, key, want_train=build)
  if cached is not None:
    offsets, meta = cached
    splits = {}
    for name in fractions:
      held_out = TsvPairs(path, offsets[name], st.st_size, st.st_mtime_ns)
      splits[name] = list(held_out)
      held_out.close()
    if "train" in offsets:
      splits["train"] = TsvPairs(path, offsets["train"], st.st_size, st.st_mtime_ns)
    return tsv.Carved(splits, dict(meta["sizes"]), int(meta["total"]))
  if not build:
    return None
  return _build(path, st, seed, fractions, key)


def _stat(path):
  try:
    return os.stat(path)
  except FileNotFoundError:
    raise DataError(f"data file not found: {path}") from None
  except OSError as e:
    raise DataError(f"cannot read data file {path}: {e}") from None


def _check_unchanged(path, st, doing: str) -> None:
  """DataError if `path` no longer has the size and mtime of `st`, taken
  before it was `doing` ("read", "indexed")."""
  after = _stat(path)
  if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
    raise DataError(f"{path} changed while it was being {doing}; run again once it is written")


def _key(seed, fractions) -> dict:
  """What the carving depends on (the seed only matters with fractions)."""
  return {"seed": int(seed) if fractions else None,
          "fractions": {name: float(f) for name, f in sorted(fractions.items())}}


def _build(path, st, seed, fractions, key) -> "tsv.Carved":
  """One pass: every line parsed, the training offsets deduplicated by a
  128-bit hash of the pair, the held-out pairs kept whole (they are small)."""
  _log.info("indexing %s (%d bytes): one pass, cached for later runs", path, st.st_size)
  # Compact arrays while reading: 8 bytes an offset, 16 a hash.
  offsets, high, low = array.array("q"), array.array("Q"), array.array("Q")
  held_out = {name: {} for name in fractions}  # pair -> offset of its first line
  for _, offset, pair in tsv.scan_tsv(path):
    split = tsv.split_of(pair[0], seed, fractions) if fractions else "train"
    if split != "train":
      held_out[split].setdefault(pair, offset)
      continue
    digest = hashlib.blake2b("\t".join(pair).encode("utf-8"), digest_size=16).digest()
    offsets.append(offset)
    high.append(int.from_bytes(digest[:8], "little"))
    low.append(int.from_bytes(digest[8:], "little"))
  _check_unchanged(path, st, "indexed")
  train = _first_of_each(np.frombuffer(offsets, np.int64),
                         np.frombuffer(high, np.uint64), np.frombuffer(low, np.uint64))
  del offsets, high, low
  arrays = {"train": train}
  arrays.update({name: np.fromiter(pairs.values(), np.int64, len(pairs))
                 for name, pairs in held_out.items()})
  sizes = {name: len(a) for name, a in arrays.items()}
  total = sum(sizes.values())
  if total:
    meta = dict(version=_VERSION, size=st.st_size, mtime_ns=st.st_mtime_ns, sizes=sizes,
                total=total, **key)
    _write_cache(path, arrays, meta)
  splits = {name: list(pairs) for name, pairs in held_out.items()}
  splits["train"] = TsvPairs(path, train, st.st_size, st.st_mtime_ns)
  return tsv.Carved(splits, sizes, total)


def _first_of_each(offsets: np.ndarray, high: np.ndarray, low: np.ndarray) -> np.ndarray:
  """The offsets of the first line of each distinct hash (high, low), in
  file order, as a new array.

  A stable sort by hash groups equal pairs with their first line first. Two
  different pairs share a 128-bit hash (and one of them would be dropped)
  with probability below 1e-20 for a billion lines.
  """
  order = np.lexsort((low, high))  # stable: file order within a hash
  high, low = high[order], low[order]
  first = np.ones(len(order), bool)
  first[1:] = (high[1:] != high[:-1]) | (low[1:] != low[:-1])
  return offsets[np.sort(order[first])]


def _read_cache(path, st, key, want_train) -> Optional[tuple]:
  """({split: offsets}, meta) from the first cache that matches the file
  and the carving, or None. "train" is loaded only if `want_train`."""
  for cache in cache_paths(path):
    try:
      with np.load(cache, allow_pickle=False) as npz:
        meta = json.loads(str(npz["meta"]))
        if not (meta.get("version") == _VERSION and meta.get("size") == st.st_size
                and meta.get("mtime_ns") == st.st_mtime_ns
                and meta.get("seed") == key["seed"]
                and meta.get("fractions") == key["fractions"]):
          continue
        names = [*key["fractions"], *(["train"] if want_train else [])]
        offsets = {name: npz[name] for name in names}
    except Exception as e:  # pylint: disable=broad-except
      # Missing (the usual case), unreadable or not a cache this module wrote
      # (np.load and json raise many kinds): build it again.
      if not isinstance(e, FileNotFoundError):
        _log.info("ignoring the index cache %s: %s", cache, e)
      continue
    if all(_plausible(offsets[name], meta["sizes"].get(name), st.st_size) for name in offsets):
      _log.info("%s: using the index cached in %s", path, cache)
      return offsets, meta
  return None


def _plausible(offsets, count, size) -> bool:
  return (offsets.dtype == np.int64 and offsets.ndim == 1 and len(offsets) == count
          and (not count or 0 <= offsets[0] and offsets[-1] < size))


def _write_cache(path, arrays, meta) -> Optional[str]:
  """Writes the cache atomically (a temporary file, then os.replace) to the
  first place of `cache_paths` that takes it; returns that place, or None
  (logged) when none does."""
  errors = []
  for cache in cache_paths(path):
    try:
      _write_atomically(cache, lambda f: np.savez(f, meta=np.array(json.dumps(meta)), **arrays))
      _log.info("%s: index cached in %s", path, cache)
      return cache
    except OSError as e:
      errors.append(f"{cache}: {e}")
  _log.warning("cannot cache the index of %s (%s); the next run indexes it again", path,
               "; ".join(errors))
  return None


def _write_atomically(target: str, write) -> None:
  """`write(f)` into a temporary file beside `target`, then os.replace: a
  reader sees the old file or the whole new one, and a failure (raised)
  leaves no temporary file behind."""
  directory = os.path.dirname(target)
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(target) + ".", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      os.fchmod(f.fileno(), 0o644)  # mkstemp's 0600 would hide it from other users
      write(f)
    os.replace(tmp, target)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    raise
