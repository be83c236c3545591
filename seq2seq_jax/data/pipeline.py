"""The input pipeline: length-bucketed, fixed-shape batches of a random-access
split, read and built by grain in background threads.

Every split is a random-access sequence of (source, target) pairs (a list, a
TSV line-offset index, a TFDS data source: see `sources`). A `Batches`
makes one pass over its split at construction (a census: each example's
bucket, nothing else is kept), and from then on reads examples only when it
builds their batch:

- Each example goes to the bucket (S, T) with S the smallest source boundary
  >= its source length and T the smallest target boundary >= its target
  length + 1 (BOS/EOS add one position). A batch holds one bucket and always
  has `batch_size` rows: the last batch of a bucket is topped up with filler
  rows (`src_len` 0, PAD, `weights` 0, `index` -1). So the compiled shapes
  are bounded by the buckets in use (`batch_shapes`).
- The order is a function of (seed, step): epoch e shuffles every example of
  the split with rng(seed, e) (globally: no windows), groups them by bucket
  and shuffles the batches. `batch_at(step)` computes any step's batch from
  scratch, so a resumed run needs no iterator state: it starts the loader at
  its step (nothing goes into the checkpoint, and a run restored on another
  number of devices or processes sees the same global batches).
- On several processes, each reads only its rows of each global batch
  (`rows`, the rows its devices hold: `parallel.process_rows`), so a host
  never reads the other hosts' examples.
- `iterate` runs grain's loader: `threads` worker threads build batches
  ahead of the step, at most `prefetch` of them. Threads suit this CPU
  project (tokenizing is light; the step releases the GIL); on a host with
  many cores and heavy per-example work, grain's `mp_prefetch` moves the
  same `batch_at` into processes.

Memory is the census: one bucket id and one example index per example.
"""

import itertools
import sys
import threading
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from seq2seq_jax.data import batching
from seq2seq_jax.data.vocab import UNK
from seq2seq_jax.errors import DataError


class Batches:
  """Fixed-shape batches of one split, by length bucket (module docstring).

  Batches are dicts of numpy arrays (B = the rows this process reads, S/T =
  the bucket's source/target boundary):

    src       int32   [B, S]  source ids, PAD after src_len
    src_len   int32   [B]     source length; 0 marks a filler row
    tgt_in    int32   [B, T]  BOS + target, PAD after
    tgt_out   int32   [B, T]  target + EOS, PAD after
    tgt_len   int32   [B]     len(target) + 1; 0 for filler rows
    weights   float32 [B, T]  1.0 on the tgt_len real positions, else 0
    index     int32   [B]     the example's position in the split, -1 for filler

  Attributes:
    num_examples: examples that are batched (after dropping).
    num_dropped: examples dropped for length (too_long="drop").
    num_truncated: examples cut to the largest bucket (too_long="truncate").
    unknown_counts: {src,tgt}_unknown, tokens mapped to <unk>, and
      {src,tgt}_tokens, all tokens, over the split.
    steps_per_epoch: global batches per epoch, the same every epoch.
  """

  def __init__(self, pairs: Sequence, encode: Optional[Callable], src_boundaries,
               tgt_boundaries, batch_size: int, seed: int, shuffle: bool = True,
               too_long: str = "error", rows: Optional[slice] = None, threads: int = 1,
               prefetch: int = 8):
    """Args:
      pairs: a random-access sequence of examples (len, [i], iteration).
      encode: example -> (src_ids, tgt_ids) without BOS/EOS, e.g.
        `batching.pair_encoder(src_tok, tgt_tok)`; None if the examples
        already are id sequences.
      src_boundaries, tgt_boundaries: bucket boundaries
        (`batching.parse_boundaries`); target ones count the BOS/EOS position.
      batch_size: rows of a global batch.
      seed: with shuffle, the batches depend only on (seed, step).
      shuffle: True for training (a new order each epoch); False for
        evaluation (buckets ascending, examples in split order).
      too_long: examples longer than the largest bucket: "error"
        (DataError), "drop" or "truncate".
      rows: the rows of each global batch this process reads (default all).
      threads, prefetch: grain's worker threads and batches built ahead (0
        threads: built in the caller's thread, on demand).
    """
    batching.check_arguments(batch_size, seed, too_long)
    self.src_boundaries = batching.parse_boundaries(src_boundaries, "data.src_boundaries")
    self.tgt_boundaries = batching.parse_boundaries(tgt_boundaries, "data.tgt_boundaries")
    self.batch_size, self.seed, self.too_long = int(batch_size), int(seed), too_long
    self.shuffle = shuffle
    self.rows = slice(*(rows or slice(0, self.batch_size)).indices(self.batch_size))
    if self.rows.step != 1 or self.rows.stop <= self.rows.start:
      raise ValueError(f"rows must be a non-empty slice of consecutive rows, got {rows}")
    self.threads, self.prefetch = int(threads), max(int(prefetch), int(threads), 1)
    self._pairs, self._encode = pairs, encode
    self._collective = rows is not None and _process_count() > 1
    self._census()
    self._plans = {}
    self._lock = threading.Lock()

  # -- the census ---------------------------------------------------------

  def _ids(self, example) -> tuple:
    """(src_ids, tgt_ids) of an example, as `encode` gives them (lists from
    `batching.pair_encoder`; `fill_batch` writes lists or arrays alike)."""
    return self._encode(example) if self._encode else example

  def _census(self):
    """One pass: every example's source and target length (and <unk>
    counts). On several processes (a training split with `rows`), process p
    reads the examples i = p mod N and the lengths are exchanged, so each
    host reads 1/N of the split here too."""
    n = len(self._pairs)
    procs, me = 1, 0
    if self._collective:
      import jax  # pylint: disable=import-outside-toplevel
      procs, me = jax.process_count(), jax.process_index()
    share = len(range(me, n, procs))  # this process's examples
    examples = self._pairs if procs == 1 else (self._pairs[i] for i in range(me, n, procs))
    # Plain Python per example (lists, ints), NumPy once at the end: per-example
    # arrays made this pass 3x slower, and it runs before every first step.
    src_lens, tgt_lens, src_unk, tgt_unk = [], [], 0, 0
    for example in itertools.islice(examples, share + 1):
      src, tgt = self._ids(example)
      src_lens.append(len(src))
      tgt_lens.append(len(tgt))
      src_unk += _count_unknown(src)
      tgt_unk += _count_unknown(tgt)
    if len(src_lens) != share:  # iteration ended early or late: not len(pairs) examples
      raise DataError(_changed_message(self._pairs))
    lens = np.zeros((2, -(-n // procs)), np.int64)  # equal shares for the exchange
    lens[0, :share] = src_lens
    lens[1, :share] = tgt_lens
    unknown = np.array([src_unk, lens[0].sum(), tgt_unk, lens[1].sum()], np.int64)
    lens[1, :share] += 1  # <eos>
    self._size = n
    if procs > 1:
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
      shares = np.asarray(multihost_utils.process_allgather(lens))  # [procs, 2, share]
      unknown = np.asarray(multihost_utils.process_allgather(unknown)).sum(axis=0)
      full = np.zeros((2, n), np.int64)
      for p in range(procs):
        full[:, p::procs] = shares[p][:, :len(range(p, n, procs))]
      lens = full
    src_lens, tgt_lens = lens[0, :n], lens[1, :n]
    self.unknown_counts = dict(zip(("src_unknown", "src_tokens", "tgt_unknown", "tgt_tokens"),
                                   map(int, unknown)))
    empty = np.flatnonzero(src_lens == 0)
    if empty.size:  # src_len 0 is how filler rows are recognised
      raise DataError(f"{empty.size} examples have an empty source (first: example "
                      f"{empty[0]}); every source needs at least one token")
    max_src, max_tgt = self.src_boundaries[-1], self.tgt_boundaries[-1]
    over = (src_lens > max_src) | (tgt_lens > max_tgt)
    num_over = int(over.sum())
    if num_over and self.too_long == "error":
      raise DataError(batching.too_long_message(num_over, n, src_lens, tgt_lens, max_src,
                                                max_tgt))
    keep = np.flatnonzero(~over) if self.too_long == "drop" else np.arange(n)
    self.num_dropped = n - len(keep)
    self.num_truncated = num_over if self.too_long == "truncate" else 0
    src_b = np.searchsorted(self.src_boundaries, np.minimum(src_lens[keep], max_src))
    tgt_b = np.searchsorted(self.tgt_boundaries, np.minimum(tgt_lens[keep], max_tgt))
    index_type = np.int32 if n < 2**31 else np.int64
    self._index = keep.astype(index_type)
    self._bucket = (src_b * len(self.tgt_boundaries) + tgt_b).astype(np.int32)
    self._counts = np.bincount(self._bucket,
                               minlength=len(self.src_boundaries) * len(self.tgt_boundaries))
    self.steps_per_epoch = int(sum(-(-int(c) // self.batch_size) for c in self._counts))

  @property
  def num_examples(self) -> int:
    return len(self._index)

  def _shape(self, bucket: int) -> tuple:
    s, t = divmod(int(bucket), len(self.tgt_boundaries))
    return self.src_boundaries[s], self.tgt_boundaries[t]

  def bucket_counts(self) -> dict:
    """{(S, T): number of examples} for the buckets in use, ascending."""
    return {self._shape(b): int(c) for b, c in enumerate(self._counts) if c}

  def batch_shapes(self) -> list:
    """Sorted (S, T) shapes of all batches this split can produce."""
    return sorted(self.bucket_counts())

  # -- the plan: which examples make the batch of each step -----------------

  def _plan(self, epoch: int) -> tuple:
    """(order, starts, buckets, ends): batch k of `epoch` is the examples
    order[starts[k]:starts[k] + batch_size], cut at ends[buckets[k]] (the
    end of its bucket), of bucket buckets[k]. Cached for the two most recent epochs (worker threads
    may straddle an epoch's end)."""
    if not self.shuffle:
      epoch = 0  # every epoch is the same
    with self._lock:
      plan = self._plans.get(epoch)
      if plan is None:
        plan = self._build_plan(epoch)
        self._plans = {e: p for e, p in self._plans.items() if e in (epoch - 1, epoch + 1)}
        self._plans[epoch] = plan
      return plan

  def _build_plan(self, epoch: int) -> tuple:
    n = self.num_examples
    rng = np.random.default_rng([self.seed, epoch]) if self.shuffle else None
    order = rng.permutation(n) if self.shuffle else np.arange(n)
    # A stable sort groups by bucket and keeps the (shuffled) order within.
    order = order[np.argsort(self._bucket[order], kind="stable")]
    ends = np.cumsum(self._counts)
    starts, buckets = [], []
    for bucket, count in enumerate(self._counts):
      first = ends[bucket] - count
      for k in range(first, ends[bucket], self.batch_size):
        starts.append(k)
        buckets.append(bucket)
    starts, buckets = np.asarray(starts, np.int64), np.asarray(buckets, np.int32)
    if self.shuffle:
      perm = rng.permutation(len(starts))
      starts, buckets = starts[perm], buckets[perm]
    return order.astype(self._index.dtype), starts, buckets, ends

  def _locate(self, step: int) -> tuple:
    """(the epoch's plan, the batch's position in it) of global step `step`."""
    self._check_nonempty()
    if step < 0:
      raise ValueError(f"step must be >= 0, got {step}")
    epoch, pos = divmod(int(step), self.steps_per_epoch)
    return self._plan(epoch), pos

  def members(self, step: int) -> np.ndarray:
    """Positions in the split of the examples of global step `step`'s
    batch, in row order (all rows, every process's)."""
    (order, starts, buckets, ends), pos = self._locate(step)
    start = starts[pos]
    stop = min(start + self.batch_size, ends[buckets[pos]])
    return self._index[order[start:stop]]

  # -- batches ------------------------------------------------------------

  def shape_at(self, step: int) -> tuple:
    """The (S, T) shape of step `step`'s batch, without reading it."""
    plan, pos = self._locate(step)
    return self._shape(plan[2][pos])

  def batch_at(self, step: int) -> dict:
    """This process's rows of the global batch of step `step`; reads only
    the examples of those rows. An example that no longer fits what the
    census found (the data changed under the run) is a DataError."""
    if len(self._pairs) != self._size:
      raise DataError(_changed_message(self._pairs))
    s, t = shape = self.shape_at(step)
    examples = self.members(step)[self.rows]
    max_src, max_tgt = self.src_boundaries[-1], self.tgt_boundaries[-1]

    def rows():
      for i in examples:
        src, tgt = self._ids(self._pairs[int(i)])
        if self.too_long == "truncate":
          src, tgt = src[:max_src], tgt[:max_tgt - 1]
        if not 0 < len(src) <= s or len(tgt) + 1 > t:
          raise DataError(_changed_message(self._pairs))
        yield src, tgt, i

    return batching.fill_batch(shape, self.rows.stop - self.rows.start, rows())

  def _check_nonempty(self):
    if not self.steps_per_epoch:
      raise DataError("no examples to batch" + (
          f" ({self.num_dropped} dropped as too long)" if self.num_dropped else ""))

  def _loader(self, start: int, stop: int) -> Iterator[dict]:
    if self.threads <= 0:
      return (self.batch_at(step) for step in range(start, stop))
    import grain  # pylint: disable=import-outside-toplevel  (only when batches are read)
    dataset = grain.MapDataset.range(start, stop).map(self.batch_at)
    return iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=self.threads,
                                                           prefetch_buffer_size=self.prefetch)))

  def iterate(self, start_step: int = 0) -> Iterator[dict]:
    """Endless batches from global step `start_step` on, built ahead by
    grain's worker threads."""
    self._check_nonempty()
    return self._loader(int(start_step), sys.maxsize)

  def iterate_epoch(self, epoch: int = 0) -> Iterator[dict]:
    """Each batch of one epoch once (with shuffle=False: buckets ascending,
    examples in split order); nothing if there are no examples."""
    if not self.steps_per_epoch:
      return iter(())
    first = epoch * self.steps_per_epoch
    return self._loader(first, first + self.steps_per_epoch)


def _process_count() -> int:
  import jax  # pylint: disable=import-outside-toplevel
  return jax.process_count()


def _count_unknown(ids) -> int:
  """<unk> tokens in a list or array of ids."""
  if isinstance(ids, list):
    return ids.count(UNK)
  return int(np.count_nonzero(np.asarray(ids) == UNK))


def _changed_message(pairs) -> str:
  return (f"the data {pairs!r} changed while training (an example differs from the pass "
          "made when the run started); restart the run")
