"""Length-bucketed, fixed-shape batches.

Each example goes to the bucket (S, T) with S the smallest source boundary
>= its source length and T the smallest target boundary >= its target length
+ 1 (BOS/EOS add one position to the decoder input/output). A batch holds
examples of one bucket only and always has `batch_size` rows: the last batch
of a bucket is topped up with filler rows (`src_len` 0, all PAD, `weights` 0,
`index` -1). So the only array shapes that ever reach a jitted step are
`[batch_size, S]` / `[batch_size, T]` for the buckets in use, and the number of
compilations is bounded by the number of buckets.

The training stream is a pure function of (seed, step): epoch e's batch order
depends only on (seed, e), so a run resumed at step k sees exactly the batches
an uninterrupted run sees at k, k+1, ... without replaying the earlier ones.

`BucketBatcher` holds all examples and shuffles them globally each epoch.
`windowed.WindowedBatcher` makes the same batches from a stream.
"""

import bisect
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from seq2seq_jax.data.tokenizers import BOS, EOS, PAD, UNK
from seq2seq_jax.errors import ConfigError, DataError

TOO_LONG_MODES = ("error", "drop", "truncate")


def encode_pairs(pairs: Sequence[tuple], src_tok, tgt_tok) -> tuple:
  """Encodes string pairs to id arrays, without BOS/EOS.

  Returns:
    (src_ids, tgt_ids): two lists of int32 arrays `[length]`, one per pair.
  """
  src_ids = [np.asarray(src_tok.encode(src), np.int32) for src, _ in pairs]
  tgt_ids = [np.asarray(tgt_tok.encode(tgt), np.int32) for _, tgt in pairs]
  return src_ids, tgt_ids


def pair_encoder(src_tok, tgt_tok) -> Callable:
  """A function (source, target) -> (src_ids, tgt_ids), one pair of what
  `encode_pairs` returns; the `encode` argument of `WindowedBatcher`."""

  def encode(pair):
    src, tgt = pair
    return (np.asarray(src_tok.encode(src), np.int32),
            np.asarray(tgt_tok.encode(tgt), np.int32))

  return encode


def parse_boundaries(value, name: str = "boundaries") -> tuple:
  """"8,16,32" or [8, 16, 32] -> (8, 16, 32).

  Args:
    value: a comma-separated string or a sequence of ints.
    name: the config field, used in the error message.

  Raises:
    ConfigError: unless the values are strictly increasing positive ints.
  """
  error = ConfigError(
      f"{name} must be strictly increasing positive integers such as "
      f"'8,16,32', got {value!r}")
  if isinstance(value, str):
    items = [item.strip() for item in value.split(",")]
    if not all(item.isascii() and item.isdigit() for item in items):
      raise error
    numbers = [int(item) for item in items]
  elif isinstance(value, (list, tuple)):
    numbers = []
    for item in value:
      if isinstance(item, (bool, np.bool_)) or not isinstance(
          item, (int, np.integer)):
        raise error
      numbers.append(int(item))
  else:
    raise error
  if not numbers or numbers[0] < 1 or any(
      a >= b for a, b in zip(numbers, numbers[1:])):
    raise error
  return tuple(numbers)


def bucket_for(length: int, boundaries: Sequence[int]) -> int:
  """The smallest boundary >= length, or -1 if length exceeds them all."""
  k = bisect.bisect_left(boundaries, length)
  return boundaries[k] if k < len(boundaries) else -1


class BucketShapes:
  """Bucket ids <-> (S, T) shapes, for batchers with `src_boundaries`,
  `tgt_boundaries` and per-bucket example counts `_counts`."""

  def _configure(self, src_boundaries, tgt_boundaries, batch_size, seed, too_long):
    _check_arguments(batch_size, seed, too_long)
    self.src_boundaries = parse_boundaries(src_boundaries, "data.src_boundaries")
    self.tgt_boundaries = parse_boundaries(tgt_boundaries, "data.tgt_boundaries")
    self.batch_size = int(batch_size)
    self.seed = int(seed)
    self.too_long = too_long

  def _shape(self, bucket: int) -> tuple:
    s, t = divmod(int(bucket), len(self.tgt_boundaries))
    return self.src_boundaries[s], self.tgt_boundaries[t]

  def bucket_counts(self) -> dict:
    """{(S, T): number of examples} for the buckets in use, ascending."""
    return {self._shape(b): int(c) for b, c in enumerate(self._counts) if c}

  def batch_shapes(self) -> list:
    """Sorted (S, T) shapes of all batches this batcher can produce."""
    return sorted(self.bucket_counts())


class BucketBatcher(BucketShapes):
  """Fixed-shape batches of token id sequences, grouped by length bucket.

  Batches are dicts of numpy arrays (B = batch_size, S/T = the bucket's
  source/target boundary):

    src       int32   [B, S]  source ids, PAD after src_len
    src_len   int32   [B]     source length; 0 marks a filler row
    tgt_in    int32   [B, T]  BOS + target, PAD after
    tgt_out   int32   [B, T]  target + EOS, PAD after
    tgt_len   int32   [B]     len(target) + 1; 0 for filler rows
    weights   float32 [B, T]  1.0 on the tgt_len real positions, else 0
    index     int32   [B]     position of the example in the input lists,
                              -1 for filler rows

  Attributes:
    num_examples: examples that are batched (after dropping).
    num_dropped: examples dropped for length (too_long="drop").
    num_truncated: examples cut to the largest bucket (too_long="truncate").
    unknown_counts: {src,tgt}_unknown, tokens mapped to <unk>, and
      {src,tgt}_tokens, all tokens, over the examples read.
  """

  def __init__(self, src_ids: Sequence[np.ndarray],
               tgt_ids: Sequence[np.ndarray], src_boundaries, tgt_boundaries,
               batch_size: int, seed: int, shuffle: bool = True,
               too_long: str = "error"):
    """Args:
      src_ids, tgt_ids: equally long lists of 1-D int sequences, no BOS/EOS.
      src_boundaries, tgt_boundaries: bucket boundaries (see
        `parse_boundaries`); target boundaries count the BOS/EOS position.
      batch_size: rows per batch.
      seed: non-negative int; with shuffle, the batch stream depends only on
        (seed, step).
      shuffle: True for training (a new order each epoch); False for
        evaluation (buckets ascending, examples in input order).
      too_long: what to do with examples longer than the largest bucket:
        "error" (DataError), "drop" or "truncate".
    """
    if len(src_ids) != len(tgt_ids):
      raise ValueError(
          f"{len(src_ids)} source sequences but {len(tgt_ids)} targets")
    self._configure(src_boundaries, tgt_boundaries, batch_size, seed, too_long)
    self.shuffle = shuffle

    max_src, max_tgt = self.src_boundaries[-1], self.tgt_boundaries[-1]
    src_lens = np.array([len(s) for s in src_ids], np.int64)
    tgt_lens = np.array([len(t) + 1 for t in tgt_ids], np.int64)
    empty = np.flatnonzero(src_lens == 0)
    if empty.size:
      # src_len 0 is how filler rows are recognised, so a real example
      # cannot have it.
      raise DataError(
          f"{empty.size} examples have an empty source (first: example "
          f"{empty[0]}); every source needs at least one token")
    over = (src_lens > max_src) | (tgt_lens > max_tgt)
    num_over = int(over.sum())
    if num_over and too_long == "error":
      raise DataError(too_long_message(
          num_over, len(src_ids), src_lens, tgt_lens, max_src, max_tgt))

    keep = np.flatnonzero(~over) if too_long == "drop" else np.arange(
        len(src_ids))
    self.num_dropped = len(src_ids) - len(keep)
    self.num_truncated = num_over if too_long == "truncate" else 0
    self._index = keep.astype(np.int32)
    self._src = [np.asarray(src_ids[i], np.int32)[:max_src] for i in keep]
    self._tgt = [np.asarray(tgt_ids[i], np.int32)[:max_tgt - 1] for i in keep]
    self.unknown_counts = _unknown_counts(zip(self._src, self._tgt))

    # Bucket ids in ascending (S, T) order, so evaluation order and the
    # pre-shuffle batch list are deterministic.
    src_b = np.searchsorted(self.src_boundaries,
                            np.minimum(src_lens[keep], max_src))
    tgt_b = np.searchsorted(self.tgt_boundaries,
                            np.minimum(tgt_lens[keep], max_tgt))
    self._bucket = (src_b * len(self.tgt_boundaries) + tgt_b).astype(np.int64)
    self._counts = np.bincount(
        self._bucket,
        minlength=len(self.src_boundaries) * len(self.tgt_boundaries))
    self._steps_per_epoch = int(sum(
        -(-int(c) // self.batch_size) for c in self._counts))
    self._plan_cache = (None, None)

  @property
  def num_examples(self) -> int:
    return len(self._index)

  @property
  def steps_per_epoch(self) -> int:
    """Batches per epoch; the same for every epoch."""
    return self._steps_per_epoch

  def _epoch_plan(self, epoch: int) -> list:
    """The cached plan of `epoch`, built on first use."""
    cached_epoch, plan = self._plan_cache
    # Without shuffle every epoch has the same plan.
    if plan is None or (cached_epoch != epoch and self.shuffle):
      plan = self._build_plan(epoch)
      self._plan_cache = (epoch, plan)
    return plan

  def _build_plan(self, epoch: int) -> list:
    """[(bucket, positions into the kept examples)] for one epoch."""
    n = self.num_examples
    if self.shuffle:
      rng = np.random.default_rng([self.seed, epoch])
      order = rng.permutation(n)
    else:
      order = np.arange(n)
    # A stable sort groups by bucket while keeping the (shuffled) order.
    order = order[np.argsort(self._bucket[order], kind="stable")]
    plan = []
    start = 0
    for bucket, count in enumerate(self._counts):
      members = order[start:start + count]
      start += count
      for k in range(0, count, self.batch_size):
        plan.append((bucket, members[k:k + self.batch_size]))
    if self.shuffle:
      plan = [plan[k] for k in rng.permutation(len(plan))]
    return plan

  def _make_batch(self, bucket: int, members: np.ndarray) -> dict:
    return fill_batch(self._shape(bucket), self.batch_size,
                       ((self._src[k], self._tgt[k], self._index[k])
                        for k in members))

  def _check_nonempty(self):
    check_nonempty(self.steps_per_epoch, self.num_dropped)

  def batch_at(self, step: int) -> dict:
    """The batch at global step `step` (epoch = step // steps_per_epoch)."""
    self._check_nonempty()
    if step < 0:
      raise ValueError(f"step must be >= 0, got {step}")
    epoch, pos = divmod(int(step), self.steps_per_epoch)
    bucket, members = self._epoch_plan(epoch)[pos]
    return self._make_batch(bucket, members)

  def iterate(self, start_step: int = 0) -> Iterator[dict]:
    """Endless batches from global step `start_step` on."""
    self._check_nonempty()
    step = int(start_step)
    while True:
      yield self.batch_at(step)
      step += 1

  def iterate_epoch(self, epoch: int = 0) -> Iterator[dict]:
    """Each batch of one epoch once (with shuffle=False: buckets ascending,
    examples in input order); yields nothing if there are no examples."""
    for bucket, members in self._epoch_plan(epoch):
      yield self._make_batch(bucket, members)


def _check_arguments(batch_size, seed, too_long):
  if isinstance(batch_size, bool) or not isinstance(
      batch_size, (int, np.integer)) or batch_size < 1:
    raise ConfigError(
        f"batch_size must be an integer >= 1, got {batch_size!r}")
  if isinstance(seed, bool) or not isinstance(
      seed, (int, np.integer)) or seed < 0:
    raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
  if too_long not in TOO_LONG_MODES:
    raise ConfigError(
        f"data.too_long must be one of {', '.join(TOO_LONG_MODES)}, "
        f"got {too_long!r}")


def check_nonempty(steps_per_epoch, num_dropped):
  if not steps_per_epoch:
    raise DataError(
        "no examples to batch"
        + (f" ({num_dropped} dropped as too long)" if num_dropped else ""))


class UnknownCounter:
  """Counts tokens the vocabularies map to <unk>, source and target apart."""

  def __init__(self):
    self.counts = {"src_unknown": 0, "src_tokens": 0, "tgt_unknown": 0, "tgt_tokens": 0}

  def add(self, src: np.ndarray, tgt: np.ndarray):
    for side, ids in (("src", src), ("tgt", tgt)):
      self.counts[f"{side}_unknown"] += int(np.count_nonzero(ids == UNK))
      self.counts[f"{side}_tokens"] += len(ids)

  def result(self) -> dict:
    return dict(self.counts)


def _unknown_counts(pairs: Iterable) -> dict:
  """{src,tgt}_{unknown,tokens} over (src ids, tgt ids) pairs."""
  counter = UnknownCounter()
  for src, tgt in pairs:
    counter.add(np.asarray(src), np.asarray(tgt))
  return counter.result()


def decode_length(max_decode_len: int, tgt_boundaries) -> int:
  """The one rule for how many tokens decoding may emit, used by training's
  evaluation, `evaluate` and `translate`: `eval.max_decode_len`, or else the
  last target boundary (the longest target training reads, <eos> included)."""
  return int(max_decode_len) or int(parse_boundaries(tgt_boundaries)[-1])


def eval_width(lengths: Iterable[int], boundaries: Sequence[int]) -> int:
  """The padded width of an evaluation split: the smallest boundary that fits
  its longest example, or, past the last boundary, that length rounded up to
  a multiple of 8. Evaluation never drops or cuts an example
  (`data.too_long` is a rule for training only)."""
  longest = max(lengths, default=1)
  for b in boundaries:
    if b >= longest:
      return int(b)
  return int(-(-longest // 8) * 8)


# The arrays of a batch that a model's train and eval steps read (the rest,
# `tgt_len` and `index`, serve the host).
MODEL_KEYS = ("src", "src_len", "tgt_in", "tgt_out", "weights")


def fill_batch(shape: tuple, batch_size: int, rows: Iterable) -> dict:
  """A batch of `shape` (S, T) from rows (src, tgt, index), filler after."""
  s, t = shape
  b = batch_size
  batch = {
      "src": np.full((b, s), PAD, np.int32),
      "src_len": np.zeros((b,), np.int32),
      "tgt_in": np.full((b, t), PAD, np.int32),
      "tgt_out": np.full((b, t), PAD, np.int32),
      "tgt_len": np.zeros((b,), np.int32),
      "weights": np.zeros((b, t), np.float32),
      "index": np.full((b,), -1, np.int32),
  }
  for row, (src, tgt, index) in enumerate(rows):
    n = len(tgt)
    batch["src"][row, :len(src)] = src
    batch["src_len"][row] = len(src)
    batch["tgt_in"][row, 0] = BOS
    batch["tgt_in"][row, 1:n + 1] = tgt
    batch["tgt_out"][row, :n] = tgt
    batch["tgt_out"][row, n] = EOS
    batch["tgt_len"][row] = n + 1
    batch["weights"][row, :n + 1] = 1.0
    batch["index"][row] = index
  return batch


def changed_message(pairs):
  return (f"the training data {pairs!r} changed while training (an example "
          "differs from the pass made when the run started); restart the run")


def too_long_message(num_over, total, src_lens, tgt_lens, max_src, max_tgt):
  parts = []
  if src_lens.max(initial=0) > max_src:
    parts.append(
        f"longest source has {int(src_lens.max())} tokens > largest "
        f"data.src_boundaries entry {max_src}")
  if tgt_lens.max(initial=0) > max_tgt:
    parts.append(
        f"longest target has {int(tgt_lens.max()) - 1}+1 (EOS) tokens > "
        f"largest data.tgt_boundaries entry {max_tgt}")
  return (f"{num_over} of {total} examples are longer than the largest "
          f"bucket ({'; '.join(parts)}); raise the boundaries or set "
          "data.too_long to 'drop' or 'truncate'")
