"""`BucketBatcher`'s batches from a stream (e.g. a `sources.PairStream` over
a file larger than memory): examples are sorted into buckets within windows
of `window` examples, so memory is bounded by the window, not by the corpus.
"""

import bisect
import itertools
from typing import Callable, Iterable, Iterator, Optional

import numpy as np

from seq2seq_jax.data.batching import (BucketShapes, UnknownCounter, changed_message,
                                       check_nonempty, fill_batch, too_long_message)
from seq2seq_jax.errors import ConfigError, DataError


class WindowedBatcher(BucketShapes):
  """`BucketBatcher`'s training batches from a stream, in bounded memory.

  Each epoch reads the examples in stream order, `window` at a time (the
  first window of an epoch has a random size in [1, window], so windows, and
  with them the batches, differ between epochs). A window is shuffled and
  sorted into length buckets; every full batch it completes is emitted, in a
  shuffled order, and the partial buckets are carried into the next window.
  At the end of the epoch the partial buckets are emitted topped up with
  filler rows. So every example is in exactly one batch per epoch, a bucket
  of c examples gives ceil(c / batch_size) batches as in `BucketBatcher`, and
  at most `window + buckets * (batch_size - 1)` examples are held at once,
  however long the stream.

  Batches are `BucketBatcher`'s dicts; `index` is the example's position in
  the stream (counting dropped ones). The stream of batches is a pure
  function of (seed, step) given the same data: `iterate(k)` gives exactly
  what `iterate(0)` gives from step k on (by re-reading the k-th step's
  epoch up to it, without building the skipped batches).

  Construction makes one pass over the stream (a census: bucket sizes and
  too-long examples, nothing kept), so the counts below are exact and
  too_long="error" fails before training starts.

  Attributes:
    num_examples: examples that are batched per epoch (after dropping).
    num_dropped: examples dropped for length (too_long="drop").
    num_truncated: examples cut to the largest bucket (too_long="truncate").
    unknown_counts: {src,tgt}_unknown, tokens mapped to <unk>, and
      {src,tgt}_tokens, all tokens, over the examples read.
    steps_per_epoch: batches per epoch; the same for every epoch.
  """

  def __init__(self, pairs: Iterable, encode: Optional[Callable],
               src_boundaries, tgt_boundaries, batch_size: int, seed: int,
               window: int, too_long: str = "error"):
    """Args:
      pairs: a re-iterable of examples that yields them in the same order
        each time, e.g. a `sources.PairStream` or a list; not a generator.
      encode: example -> (src_ids, tgt_ids) without BOS/EOS, e.g.
        `pair_encoder(src_tok, tgt_tok)`; None if the examples already are
        (src_ids, tgt_ids).
      src_boundaries, tgt_boundaries, batch_size, seed, too_long: as in
        `BucketBatcher`.
      window: examples sorted into buckets together (data.bucket_window);
        larger windows waste less padding and mix better, and cost memory.
    """
    if iter(pairs) is pairs:
      raise ValueError(
          "WindowedBatcher needs a re-iterable source of examples (a list "
          "or sources.PairStream), not a one-shot iterator")
    self._configure(src_boundaries, tgt_boundaries, batch_size, seed, too_long)
    if isinstance(window, bool) or not isinstance(
        window, (int, np.integer)) or window < 1:
      raise ConfigError(
          f"data.bucket_window must be an integer >= 1 to stream, got "
          f"{window!r}")
    self.window = int(window)
    self._pairs = pairs
    self._encode = encode
    self._census()

  def _census(self):
    num_buckets = len(self.src_boundaries) * len(self.tgt_boundaries)
    counts = np.zeros(num_buckets, np.int64)
    total = num_over = num_empty = 0
    first_empty = None
    longest = np.zeros(2, np.int64)  # source, target + 1
    unknown = UnknownCounter()
    for index, example in enumerate(self._pairs):
      src, tgt = self._ids(example)
      total += 1
      unknown.add(src, tgt)
      if not len(src):
        num_empty += 1
        first_empty = index if first_empty is None else first_empty
        continue
      longest = np.maximum(longest, (len(src), len(tgt) + 1))
      bucket, over = self._bucket(src, tgt)
      num_over += over
      if not (over and self.too_long == "drop"):
        counts[bucket] += 1
    if num_empty:
      # src_len 0 is how filler rows are recognised.
      raise DataError(
          f"{num_empty} examples have an empty source (first: example "
          f"{first_empty}); every source needs at least one token")
    max_src, max_tgt = self.src_boundaries[-1], self.tgt_boundaries[-1]
    if num_over and self.too_long == "error":
      raise DataError(too_long_message(
          num_over, total, longest[:1], longest[1:], max_src, max_tgt))
    self._counts = counts
    self.unknown_counts = unknown.result()
    self.num_dropped = num_over if self.too_long == "drop" else 0
    self.num_truncated = num_over if self.too_long == "truncate" else 0
    self.num_examples = int(counts.sum())
    self.steps_per_epoch = int(sum(
        -(-int(c) // self.batch_size) for c in counts))

  def _ids(self, example):
    src, tgt = self._encode(example) if self._encode else example
    return np.asarray(src, np.int32), np.asarray(tgt, np.int32)

  def _bucket(self, src, tgt) -> tuple:
    """(bucket id, longer than the largest bucket?) of one example."""
    max_src, max_tgt = self.src_boundaries[-1], self.tgt_boundaries[-1]
    src_len, tgt_len = len(src), len(tgt) + 1
    s = bisect.bisect_left(self.src_boundaries, min(src_len, max_src))
    t = bisect.bisect_left(self.tgt_boundaries, min(tgt_len, max_tgt))
    return (s * len(self.tgt_boundaries) + t,
            src_len > max_src or tgt_len > max_tgt)

  def _examples(self) -> Iterator[tuple]:
    """(bucket, src, tgt, index) of the kept examples, in stream order."""
    max_src, max_tgt = self.src_boundaries[-1], self.tgt_boundaries[-1]
    for index, example in enumerate(self._pairs):
      src, tgt = self._ids(example)
      bucket, over = self._bucket(src, tgt)
      if not len(src) or (over and self.too_long == "error"):
        raise DataError(changed_message(self._pairs))
      if over and self.too_long == "drop":
        continue
      yield bucket, src[:max_src], tgt[:max_tgt - 1], index

  def _plan(self, epoch: int) -> Iterator[tuple]:
    """Yields (bucket, [(src, tgt, index)]) for the batches of `epoch`."""
    rng = np.random.default_rng([self.seed, epoch])
    size = int(rng.integers(1, self.window + 1))
    window, seen = [], 0
    carried = [[] for _ in self._counts]  # partial buckets, < batch_size each
    for example in self._examples():
      window.append(example)
      seen += 1
      if len(window) == size:
        yield from self._flush(window, carried, rng, final=False)
        window, size = [], self.window
    if seen != self.num_examples:
      raise DataError(changed_message(self._pairs))
    yield from self._flush(window, carried, rng, final=True)

  def _flush(self, window, carried, rng, final):
    for k in rng.permutation(len(window)):
      bucket, *row = window[k]
      carried[bucket].append(row)
    window.clear()  # the batches below hold the examples now
    batches = []
    b = self.batch_size
    for bucket, rows in enumerate(carried):
      full = len(rows) - len(rows) % b
      batches.extend((bucket, rows[k:k + b]) for k in range(0, full, b))
      rest = rows[full:]
      if final and rest:
        batches.append((bucket, rest))
        rest = []
      carried[bucket] = rest
    for k in rng.permutation(len(batches)):
      yield batches[k]

  def _make_batch(self, bucket: int, rows: list) -> dict:
    return fill_batch(self._shape(bucket), self.batch_size, rows)

  def batch_at(self, step: int) -> dict:
    """The batch at global step `step`; re-reads its epoch up to it."""
    if step < 0:
      raise ValueError(f"step must be >= 0, got {step}")
    return next(self.iterate(step))

  def iterate(self, start_step: int = 0) -> Iterator[dict]:
    """Endless batches from global step `start_step` on."""
    check_nonempty(self.steps_per_epoch, self.num_dropped)
    epoch, skip = divmod(int(start_step), self.steps_per_epoch)
    while True:
      for bucket, rows in itertools.islice(self._plan(epoch), skip, None):
        yield self._make_batch(bucket, rows)
      epoch, skip = epoch + 1, 0

  def iterate_epoch(self, epoch: int = 0) -> Iterator[dict]:
    """Each batch of one epoch once; nothing if there are no examples."""
    for bucket, rows in self._plan(epoch):
      yield self._make_batch(bucket, rows)
