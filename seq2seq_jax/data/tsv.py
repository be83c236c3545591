"""The TSV format and the split rule: reading `source<TAB>target` lines
(plain or gzipped, with `file:line` errors), and carving held-out splits off
a file by a hash of (seed, source sentence). Used by `sources` (in memory)
and `tsv_index` (the line-offset index of a large file).
"""

import gzip
import hashlib
from typing import Iterator, NamedTuple, Optional

from seq2seq_jax.errors import DataError


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
  offset = 0
  for lineno, raw in enumerate(open_lines(path), start=1):
    stats["lines"] = lineno
    pair = parse_line(raw, f"{path}:{lineno}", lineno == 1, stats)
    if pair is not None:
      stats["pairs"] += 1
      yield lineno, offset, pair
    offset += len(raw)


def open_lines(path: str) -> Iterator[bytes]:
  """The raw lines of a TSV file (gunzipped if the name ends in ".gz"), with
  `scan_tsv`'s DataErrors for a missing, unreadable or corrupt file."""
  opener = gzip.open if str(path).endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      yield from f
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
