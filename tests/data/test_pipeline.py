"""Tests for seq2seq_jax.data.pipeline: length-bucketed batches of a
random-access split (`Batches`), built by grain's worker threads."""

import collections
import copy
import gzip

import numpy as np
import pytest

from seq2seq_jax.data import batching, tasks
from seq2seq_jax.data.pipeline import Batches
from seq2seq_jax.data.tokenizers import BOS, EOS, PAD, UNK, CharTokenizer
from seq2seq_jax.errors import ConfigError, DataError

SRC_B = (4, 8, 12)
TGT_B = (5, 9, 13)
KEYS = ("src", "src_len", "tgt_in", "tgt_out", "tgt_len", "weights", "index")


def _random_data(n, seed=0, max_src=12, max_tgt=12):
  rng = np.random.default_rng(seed)
  src = [rng.integers(4, 30, rng.integers(1, max_src + 1)).astype(np.int32)
         for _ in range(n)]
  tgt = [rng.integers(4, 30, rng.integers(0, max_tgt + 1)).astype(np.int32)
         for _ in range(n)]
  return src, tgt


def _batches(src, tgt, *args, **kwargs):
  """Batches of id sequences (what BucketBatcher(src, tgt, ...) took)."""
  return Batches(list(zip(src, tgt)), None, *args, **kwargs)


def _batcher(n=203, batch_size=8, seed=1, **kwargs):
  src, tgt = _random_data(n)
  return src, tgt, _batches(src, tgt, SRC_B, TGT_B, batch_size, seed, **kwargs)


class Recorded:
  """A random-access split that is not a list: records the positions read
  at random (`reads`) and counts the passes made by iteration (`passes`).
  Reading position `fail_at` raises."""

  def __init__(self, pairs, fail_at=None):
    self.pairs, self.fail_at = pairs, fail_at
    self.reads, self.passes = [], 0

  def __len__(self):
    return len(self.pairs)

  def __getitem__(self, i):
    self.reads.append(int(i))
    if i == self.fail_at:
      raise RuntimeError(f"cannot read example {i}")
    return self.pairs[i]

  def __iter__(self):
    self.passes += 1
    return iter(self.pairs)


def _assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
    assert a[key].dtype == b[key].dtype, key


def _epoch(batcher, epoch):
  n = batcher.steps_per_epoch
  return [batcher.batch_at(epoch * n + k) for k in range(n)]


def _indices(batches):
  index = np.concatenate([b["index"] for b in batches])
  return index[index >= 0]


# The batches: shapes, content, filler rows.


def test_every_example_once_per_epoch():
  src, _, batcher = _batcher()
  for epoch in (0, 1, 5):
    seen = np.concatenate([b["index"] for b in _epoch(batcher, epoch)])
    seen = seen[seen >= 0]
    assert sorted(seen.tolist()) == list(range(len(src)))


def test_steps_per_epoch_counts_partial_batches():
  _, _, batcher = _batcher()
  counts = batcher.bucket_counts()
  assert sum(counts.values()) == batcher.num_examples == 203
  assert batcher.steps_per_epoch == sum(-(-c // 8) for c in counts.values())


def test_only_bucket_shapes_and_fixed_rows():
  src, tgt, batcher = _batcher()
  shapes = set()
  for batch in _epoch(batcher, 0) + _epoch(batcher, 1):
    s, t = batch["src"].shape[1], batch["tgt_in"].shape[1]
    assert s in SRC_B and t in TGT_B
    shapes.add((s, t))
    for key, shape, dtype in [
        ("src", (8, s), np.int32), ("src_len", (8,), np.int32),
        ("tgt_in", (8, t), np.int32), ("tgt_out", (8, t), np.int32),
        ("tgt_len", (8,), np.int32), ("weights", (8, t), np.float32),
        ("index", (8,), np.int32)]:
      assert batch[key].shape == shape and batch[key].dtype == dtype, key
    for row, i in enumerate(batch["index"]):
      if i < 0:
        continue
      # The bucket is the smallest that fits.
      assert batching.bucket_for(len(src[i]), SRC_B) == s
      assert batching.bucket_for(len(tgt[i]) + 1, TGT_B) == t
  assert sorted(shapes) == batcher.batch_shapes()


def test_batches_hold_each_examples_own_ids():
  src, tgt, batcher = _batcher()
  expected = collections.Counter(
      (batching.bucket_for(len(s), SRC_B), batching.bucket_for(len(t) + 1, TGT_B))
      for s, t in zip(src, tgt))
  assert batcher.bucket_counts() == dict(sorted(expected.items()))
  assert batcher.batch_shapes() == sorted(expected)
  assert batcher.steps_per_epoch == sum(-(-c // 8) for c in expected.values())
  assert batcher.num_examples == 203
  for epoch in (0, 1, 4):
    batches = list(batcher.iterate_epoch(epoch))
    assert len(batches) == batcher.steps_per_epoch
    assert sorted(_indices(batches).tolist()) == list(range(203))
    # 203 examples in batches of 8: real rows and filler rows, both checked below.
    assert 0 < sum(int((b["index"] < 0).sum()) for b in batches) < len(batches) * 8
    for batch in batches:
      assert batch.keys() == set(KEYS)
      s, t = batch["src"].shape[1], batch["tgt_in"].shape[1]
      assert (s, t) in batcher.batch_shapes() and batch["index"].shape == (8,)
      for row, i in enumerate(batch["index"]):
        if i >= 0:  # the smallest bucket that fits, the example's own ids
          assert batching.bucket_for(len(src[i]), SRC_B) == s
          assert batching.bucket_for(len(tgt[i]) + 1, TGT_B) == t
          np.testing.assert_array_equal(batch["src"][row, :len(src[i])], src[i])
          np.testing.assert_array_equal(batch["tgt_out"][row, :len(tgt[i]) + 1],
                                        np.append(tgt[i], EOS))
        else:
          assert batch["src_len"][row] == 0 and not batch["weights"][row].any()


def test_filler_rows():
  src, tgt = _random_data(13)
  batcher = _batches(src, tgt, (12,), (13,), 5, seed=0)
  batches = _epoch(batcher, 0)
  assert len(batches) == 3
  filler = np.concatenate([b["index"] for b in batches]) < 0
  assert filler.sum() == 2
  for batch in batches:
    rows = batch["index"] < 0
    assert (batch["src_len"][rows] == 0).all()
    assert (batch["tgt_len"][rows] == 0).all()
    assert (batch["weights"][rows] == 0).all()
    for key in ("src", "tgt_in", "tgt_out"):
      assert (batch[key][rows] == PAD).all()
    assert (batch["src_len"][~rows] > 0).all()


def test_batch_content_for_hand_made_examples():
  src = [np.array([7, 8, 9], np.int32), np.array([5], np.int32)]
  tgt = [np.array([10, 11], np.int32), np.array([], np.int32)]
  batcher = _batches(src, tgt, (4,), (4,), batch_size=3, seed=0, shuffle=False)
  (batch,) = list(batcher.iterate_epoch())
  np.testing.assert_array_equal(batch["index"], [0, 1, -1])
  np.testing.assert_array_equal(
      batch["src"], [[7, 8, 9, PAD], [5, PAD, PAD, PAD], [PAD] * 4])
  np.testing.assert_array_equal(batch["src_len"], [3, 1, 0])
  np.testing.assert_array_equal(
      batch["tgt_in"], [[BOS, 10, 11, PAD], [BOS, PAD, PAD, PAD], [PAD] * 4])
  np.testing.assert_array_equal(
      batch["tgt_out"], [[10, 11, EOS, PAD], [EOS, PAD, PAD, PAD], [PAD] * 4])
  np.testing.assert_array_equal(batch["tgt_len"], [3, 1, 0])
  np.testing.assert_array_equal(
      batch["weights"], [[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])


def test_encoded_text_equals_the_encoded_ids():
  # `encode` maps each example when it is read; the batches are those of
  # the ids encoded up front with encode=None.
  tok = CharTokenizer.build(["abc"])
  texts = [("ab", "c"), ("cab", "")]
  from_text = Batches(texts, batching.pair_encoder(tok, tok), (4,), (4,), 3, 0)
  (batch,) = from_text.iterate_epoch(0)
  from_ids = _batches(*batching.encode_pairs(texts, tok, tok), (4,), (4,), 3, 0)
  np.testing.assert_array_equal(batch["src"], from_ids.batch_at(0)["src"])
  _assert_batches_equal(from_text.batch_at(0), from_ids.batch_at(0))
  _assert_batches_equal(batch, from_ids.batch_at(0))


def test_weights_match_lengths():
  _, _, batcher = _batcher()
  for batch in _epoch(batcher, 0):
    t = batch["weights"].shape[1]
    expected = np.arange(t)[None, :] < batch["tgt_len"][:, None]
    np.testing.assert_array_equal(batch["weights"], expected)
    np.testing.assert_array_equal(batch["tgt_in"] != PAD, expected)
    np.testing.assert_array_equal(
        batch["tgt_out"][np.arange(8), np.maximum(batch["tgt_len"] - 1, 0)]
        [batch["tgt_len"] > 0], EOS)


# The order: a function of (seed, step).


def test_epochs_differ_and_depend_only_on_seed():
  src, tgt, batcher = _batcher(seed=1)
  order = lambda b, e: np.concatenate([x["index"] for x in _epoch(b, e)])
  assert not np.array_equal(order(batcher, 0), order(batcher, 1))
  other = _batches(src, tgt, SRC_B, TGT_B, 8, seed=1)
  np.testing.assert_array_equal(order(batcher, 3), order(other, 3))
  reseeded = _batches(src, tgt, SRC_B, TGT_B, 8, seed=2)
  assert not np.array_equal(order(batcher, 0), order(reseeded, 0))
  # The same through the loader (iterate_epoch).
  loaded = lambda b, e: np.concatenate([x["index"] for x in b.iterate_epoch(e)])
  assert not np.array_equal(loaded(batcher, 0), loaded(batcher, 1))
  np.testing.assert_array_equal(loaded(batcher, 3), loaded(other, 3))
  np.testing.assert_array_equal(loaded(batcher, 3), order(batcher, 3))
  assert not np.array_equal(loaded(batcher, 0), loaded(reseeded, 0))


def test_shuffle_is_global():
  # No windows: an epoch moves examples far from their split position
  # (what WindowedBatcher did only with a window as large as the data).
  _, _, batcher = _batcher()
  for epoch in (0, 1):
    index = _indices(list(batcher.iterate_epoch(epoch)))
    assert sorted(index) == list(range(203))
    assert np.mean(np.abs(index - np.arange(203))) > 50


def test_plan_is_the_old_bucket_batchers():
  """The epoch plan is BucketBatcher's (global shuffle with rng(seed,
  epoch), stable grouping by bucket, batches shuffled): a run keeps its data
  order across the move to the pipeline."""
  src, tgt, batcher = _batcher(seed=3)
  bucket = np.array([SRC_B.index(batching.bucket_for(len(s), SRC_B)) * len(TGT_B)
                     + TGT_B.index(batching.bucket_for(len(t) + 1, TGT_B))
                     for s, t in zip(src, tgt)])
  counts = np.bincount(bucket, minlength=len(SRC_B) * len(TGT_B))
  for epoch in (0, 1, 7):
    rng = np.random.default_rng([3, epoch])
    order = rng.permutation(len(src))
    order = order[np.argsort(bucket[order], kind="stable")]
    plan, start = [], 0
    for count in counts:
      members = order[start:start + count]
      start += count
      plan += [members[k:k + 8] for k in range(0, count, 8)]
    plan = [plan[k] for k in rng.permutation(len(plan))]
    assert len(plan) == batcher.steps_per_epoch
    for pos, members in enumerate(plan):
      np.testing.assert_array_equal(
          batcher.members(epoch * batcher.steps_per_epoch + pos), members)


def test_batch_order_mixes_buckets():
  _, _, batcher = _batcher()
  assert len(batcher.batch_shapes()) > 3
  for epoch in range(3):
    shapes = [(b["src"].shape[1], b["tgt_in"].shape[1])
              for b in _epoch(batcher, epoch)]
    # Grouped by bucket, the shape would change once per bucket.
    changes = sum(a != b for a, b in zip(shapes, shapes[1:]))
    assert changes > len(batcher.batch_shapes())


def test_restart_matches_continuing_stream():
  src, tgt, batcher = _batcher()
  spe = batcher.steps_per_epoch
  stream = batcher.iterate()
  reference = [next(stream) for _ in range(2 * spe + 5)]
  for k in (0, 1, spe - 1, spe, spe + 3, 2 * spe + 1):
    fresh = _batches(src, tgt, SRC_B, TGT_B, 8, seed=1)
    _assert_batches_equal(fresh.batch_at(k), reference[k])
    resumed = fresh.iterate(start_step=k)
    for j in range(k, min(k + 4, len(reference))):
      _assert_batches_equal(next(resumed), reference[j])


def test_restart_does_not_build_earlier_epochs(monkeypatch):
  _, _, batcher = _batcher()
  built = []
  original = Batches._build_plan

  def spy(self, epoch):
    built.append(epoch)
    return original(self, epoch)

  monkeypatch.setattr(Batches, "_build_plan", spy)
  stream = batcher.iterate(start_step=7 * batcher.steps_per_epoch - 1)
  for _ in range(3):
    next(stream)
  assert built == [6, 7]


@pytest.mark.parametrize("threads", [0, 1, 2])
def test_iterate_equals_batch_at(threads):
  # However many threads build them, the loader's batches are batch_at's,
  # in step order, over epoch ends, and from any start step.
  src, tgt, reference = _batcher(threads=0)
  batcher = _batches(src, tgt, SRC_B, TGT_B, 8, seed=1, threads=threads)
  spe = batcher.steps_per_epoch
  expected = [reference.batch_at(s) for s in range(3 * spe)]
  stream = batcher.iterate()
  for s in range(3 * spe):
    _assert_batches_equal(next(stream), expected[s])
  for k in (1, spe - 1, spe + 2, 2 * spe + 5):
    stream = batcher.iterate(k)
    for s in range(k, 3 * spe):
      _assert_batches_equal(next(stream), expected[s])
  for epoch in range(3):
    batches = list(batcher.iterate_epoch(epoch))
    assert len(batches) == spe
    for got, want in zip(batches, expected[epoch * spe:]):
      _assert_batches_equal(got, want)


def test_unshuffled_order():
  src, tgt, batcher = _batcher(shuffle=False)
  batches = list(batcher.iterate_epoch())
  assert len(batches) == batcher.steps_per_epoch
  shapes = [(b["src"].shape[1], b["tgt_in"].shape[1]) for b in batches]
  assert shapes == sorted(shapes)
  index = np.concatenate([b["index"] for b in batches])
  index = index[index >= 0]
  assert sorted(index.tolist()) == list(range(len(src)))
  # Within a bucket the input order is kept.
  for shape in set(shapes):
    rows = np.concatenate([b["index"] for b, s in zip(batches, shapes)
                           if s == shape])
    rows = rows[rows >= 0]
    assert (np.diff(rows) > 0).all()
  again = list(batcher.iterate_epoch())
  for a, b in zip(batches, again):
    _assert_batches_equal(a, b)
  for a, b in zip(batches, batcher.iterate_epoch(3)):  # every epoch is the same
    _assert_batches_equal(a, b)


# members, shape_at, rows.


def test_members_cover_each_kept_example_once_per_epoch():
  src, tgt = _random_data(60, max_src=20, max_tgt=20)
  fits = [i for i in range(60) if len(src[i]) <= 12 and len(tgt[i]) + 1 <= 13]
  batcher = _batches(src, tgt, SRC_B, TGT_B, 8, seed=0, too_long="drop")
  spe = batcher.steps_per_epoch
  for epoch in (0, 1, 3):
    members = [batcher.members(epoch * spe + k) for k in range(spe)]
    assert all(0 < len(m) <= 8 for m in members)
    assert sorted(np.concatenate(members).tolist()) == fits
    for k, m in enumerate(members):  # the real rows of the batch, in row order
      index = batcher.batch_at(epoch * spe + k)["index"]
      np.testing.assert_array_equal(index[index >= 0], m)
      np.testing.assert_array_equal(index[len(m):], -1)
  with pytest.raises(ValueError, match="step"):
    batcher.members(-1)


def test_shape_at_is_the_batch_shape_and_reads_nothing():
  src, tgt = _random_data(203)
  for shuffle in (True, False):
    recorded = Recorded(list(zip(src, tgt)))
    batcher = Batches(recorded, None, SRC_B, TGT_B, 8, seed=1, shuffle=shuffle)
    steps = range(2 * batcher.steps_per_epoch + 3)
    shapes = [batcher.shape_at(s) for s in steps]
    assert recorded.reads == []
    for s, shape in zip(steps, shapes):
      batch = batcher.batch_at(s)
      assert shape == (batch["src"].shape[1], batch["tgt_in"].shape[1])
      assert shape in batcher.batch_shapes()


def test_rows_split_a_global_batch_and_read_only_their_examples():
  src, tgt = _random_data(203)
  pairs = list(zip(src, tgt))
  full = Batches(pairs, None, SRC_B, TGT_B, 8, seed=1)
  spe = full.steps_per_epoch
  halves = (slice(0, 4), slice(4, 8))
  recorded = [Recorded(pairs) for _ in halves]
  parts = [Batches(r, None, SRC_B, TGT_B, 8, seed=1, rows=rows)
           for r, rows in zip(recorded, halves)]
  # Construction: one census pass by iteration, no reads at random.
  assert [(r.passes, r.reads) for r in recorded] == [(1, [])] * 2
  for part in parts:
    assert part.steps_per_epoch == spe and part.num_examples == 203
    assert part.batch_shapes() == full.batch_shapes()
  for epoch in range(3):
    read_in_epoch = [set(), set()]
    for s in range(epoch * spe, (epoch + 1) * spe):
      whole = full.batch_at(s)
      a, b = (part.batch_at(s) for part in parts)
      assert a["src"].shape[0] == b["src"].shape[0] == 4
      _assert_batches_equal({k: np.concatenate([a[k], b[k]]) for k in a}, whole)
      assert parts[0].shape_at(s) == parts[1].shape_at(s) == full.shape_at(s)
      # Each half read exactly its rows' examples, in row order, once each.
      for r, rows, read, part in zip(recorded, halves, read_in_epoch, parts):
        np.testing.assert_array_equal(part.members(s), full.members(s))
        assert r.reads == full.members(s)[rows].tolist()
        read.update(r.reads)
        r.reads.clear()
    # The halves read disjoint examples, together all of them.
    assert not read_in_epoch[0] & read_in_epoch[1]
    assert sorted(read_in_epoch[0] | read_in_epoch[1]) == list(range(203))
  # The loader reads the same rows: only its own half's examples.
  for r in recorded:
    r.reads.clear()
  stream = parts[1].iterate(5)
  for s in range(5, 5 + spe):
    _assert_batches_equal(next(stream), parts[1].batch_at(s))
  mine = {int(i) for s in range(5, 5 + 2 * spe) for i in full.members(s)[4:8]}
  assert recorded[0].reads == [] and set(recorded[1].reads) <= mine


# Reading: a random-access source, read only when a batch is built.


class _Generated:
  """`n` generated examples, made only when read: a random-access source
  that is not a list. Counts passes (iteration) and reads of each example."""

  def __init__(self, n):
    self.n, self.passes, self.reads = n, 0, np.zeros(n, np.int64)

  def __len__(self):
    return self.n

  @staticmethod
  def example(k):
    # Example k is recognisable from its lengths and first token.
    return [4 + k % 26] * (1 + k % 12), [4] * ((k * 7) % 13)

  def __getitem__(self, k):
    self.reads[k] += 1
    return self.example(k)

  def __iter__(self):
    self.passes += 1
    return (self.example(k) for k in range(self.n))


def test_random_access_source_is_read_once_per_epoch():
  source = _Generated(200_000)
  batcher = Batches(source, None, SRC_B, TGT_B, 32, seed=0, prefetch=8)
  assert source.passes == 1  # the census, which keeps nothing
  assert not source.reads.any()
  assert batcher.num_examples == 200_000
  seen = np.zeros(200_000, np.int64)
  steps = most_ahead = 0
  for batch in batcher.iterate_epoch(0):
    steps += 1
    # Read ahead of the step by at most the loader's prefetch (and a batch
    # in each worker thread).
    most_ahead = max(most_ahead, int(source.reads.sum()) - 32 * steps)
    real = batch["index"] >= 0
    index = batch["index"][real]
    seen[index] += 1
    np.testing.assert_array_equal(batch["src_len"][real], 1 + index % 12)
    np.testing.assert_array_equal(batch["src"][real, 0], 4 + index % 26)
    np.testing.assert_array_equal(batch["tgt_len"][real], (index * 7) % 13 + 1)
  assert source.passes == 1
  assert (seen == 1).all() and (source.reads == 1).all()
  assert steps == batcher.steps_per_epoch
  assert most_ahead <= 32 * (8 + 1)


@pytest.mark.parametrize("threads", [0, 1, 2])
def test_a_failing_read_reaches_the_caller(threads):
  src, tgt, full = _batcher(threads=0)
  bad = int(full.members(10)[0])  # read for step 10, not before
  recorded = Recorded(list(zip(src, tgt)), fail_at=bad)
  batcher = Batches(recorded, None, SRC_B, TGT_B, 8, seed=1, threads=threads)
  stream = batcher.iterate()
  for s in range(10):
    _assert_batches_equal(next(stream), full.batch_at(s))
  with pytest.raises(RuntimeError, match=f"cannot read example {bad}"):
    next(stream)
  with pytest.raises(RuntimeError, match=f"cannot read example {bad}"):
    list(batcher.iterate_epoch(0))
  with pytest.raises(RuntimeError, match=f"cannot read example {bad}"):
    batcher.batch_at(10)


# Lengths: too long, empty, <unk>.


def test_too_long_error_names_fields():
  src, tgt = _random_data(50, max_src=20, max_tgt=3)
  with pytest.raises(DataError) as info:
    _batches(src, tgt, SRC_B, TGT_B, 8, seed=0)
  message = str(info.value)
  num_long = sum(len(s) > 12 for s in src)
  assert message.startswith(f"{num_long} of 50 examples")
  assert f"longest source has {max(map(len, src))} tokens" in message
  assert "data.src_boundaries" in message
  assert "data.tgt_boundaries" not in message
  assert "\n" not in message

  src, tgt = _random_data(50, max_src=3, max_tgt=30)
  with pytest.raises(DataError, match="data.tgt_boundaries"):
    _batches(src, tgt, SRC_B, TGT_B, 8, seed=0)


def test_too_long_is_checked_before_training():
  # At construction, by the census pass: before any batch is read.
  src, tgt = _random_data(50, max_src=20, max_tgt=3)
  recorded = Recorded(list(zip(src, tgt)))
  with pytest.raises(DataError, match="longer than the largest bucket"):
    Batches(recorded, None, SRC_B, TGT_B, 8, 0)
  assert recorded.passes == 1 and recorded.reads == []


def test_too_long_drop():
  src, tgt = _random_data(60, max_src=20, max_tgt=20)
  fits = [i for i in range(60) if len(src[i]) <= 12 and len(tgt[i]) + 1 <= 13]
  batcher = _batches(src, tgt, SRC_B, TGT_B, 8, seed=0, too_long="drop")
  assert batcher.num_dropped == 60 - len(fits) > 0
  assert batcher.num_examples == len(fits)
  index = np.concatenate([b["index"] for b in _epoch(batcher, 0)])
  assert sorted(index[index >= 0].tolist()) == fits
  # A dropped example is never read again.
  recorded = Recorded(list(zip(src, tgt)))
  batcher = Batches(recorded, None, SRC_B, TGT_B, 8, seed=0, too_long="drop")
  for epoch in (0, 1):
    assert sorted(_indices(list(batcher.iterate_epoch(epoch)))) == fits
  assert sorted(recorded.reads) == sorted(fits * 2)


def test_too_long_truncate():
  src, tgt = _random_data(60, max_src=20, max_tgt=20)
  batcher = _batches(src, tgt, SRC_B, TGT_B, 8, seed=0, too_long="truncate")
  num_long = sum(len(s) > 12 or len(t) + 1 > 13 for s, t in zip(src, tgt))
  assert batcher.num_truncated == num_long > 0
  assert batcher.num_examples == 60
  for batch in _epoch(batcher, 0):
    for row, i in enumerate(batch["index"]):
      if i < 0:
        continue
      s = src[i][:12]
      t = tgt[i][:12]
      assert batch["src_len"][row] == len(s)
      np.testing.assert_array_equal(batch["src"][row, :len(s)], s)
      np.testing.assert_array_equal(batch["tgt_out"][row, :len(t) + 1],
                                    np.append(t, EOS))


def test_all_dropped_and_bad_arguments():
  src, tgt = _random_data(5, max_src=3)
  long_src = [np.arange(4, 30, dtype=np.int32)] * 3
  batcher = _batches(long_src, tgt[:3], SRC_B, TGT_B, 8, seed=0, too_long="drop")
  assert batcher.steps_per_epoch == 0 and list(batcher.iterate_epoch()) == []
  with pytest.raises(DataError, match="no examples"):
    batcher.batch_at(0)
  with pytest.raises(DataError, match=r"no examples to batch \(3 dropped as too long\)"):
    batcher.iterate()
  with pytest.raises(ConfigError, match="too_long"):
    _batches(src, tgt, SRC_B, TGT_B, 8, seed=0, too_long="skip")
  with pytest.raises(ConfigError, match="batch_size"):
    _batches(src, tgt, SRC_B, TGT_B, 0, seed=0)
  with pytest.raises(ConfigError, match="data.tgt_boundaries"):
    _batches(src, tgt, SRC_B, "9,5", 8, seed=0)
  with pytest.raises(DataError, match="empty source"):
    _batches(src + [np.array([], np.int32)], tgt + [tgt[0]], SRC_B, TGT_B, 8, seed=0)
  # Examples that are not yet ids, encoded as they are read.
  with pytest.raises(DataError, match=r"1 examples have an empty source \(first: example 2\)"):
    Batches([([4], [5]), ([6], []), ([], [5])], None, SRC_B, TGT_B, 8, 0)


def test_unknown_tokens_are_counted():
  src = [np.array([5, UNK, 6]), np.array([UNK, UNK]), np.array([7])]
  tgt = [np.array([8]), np.array([9, UNK]), np.array([UNK, 4, 5])]
  expected = {"src_unknown": 3, "src_tokens": 6, "tgt_unknown": 2, "tgt_tokens": 6}
  assert _batches(src, tgt, SRC_B, TGT_B, 2, seed=0).unknown_counts == expected
  recorded = Recorded(list(zip(src, tgt)))  # a non-list source: the census counts
  assert Batches(recorded, None, SRC_B, TGT_B, 2, seed=0).unknown_counts == expected
  # From text: characters the vocabulary never saw become <unk>, and count.
  tok = CharTokenizer.build(["abc"])
  ids = [np.array(tok.encode(t)) for t in ("abz", "zz")]
  counted = _batches(ids, ids, SRC_B, TGT_B, 2, seed=0).unknown_counts
  assert counted["src_unknown"] == counted["tgt_unknown"] == 3
  texts = [("abz", "abz"), ("zz", "zz")]
  encoded = Batches(texts, batching.pair_encoder(tok, tok), SRC_B, TGT_B, 2, seed=0)
  assert encoded.unknown_counts == counted


# A split that changes under a running job.


def _grown_past_the_largest_bucket(pairs, batcher):
  i = int(batcher.members(0)[0])
  pairs[i] = (np.arange(4, 4 + 13, dtype=np.int32), pairs[i][1])


def _shorter(pairs, batcher):
  del pairs[-1]  # the file lost its last line


def _moved_to_a_larger_bucket(pairs, batcher):
  # Still within the largest bucket, but longer than the census's one.
  i = next(int(i) for i in batcher.members(0) if len(pairs[i][0]) <= 4)
  pairs[i] = (np.arange(4, 4 + 12, dtype=np.int32), pairs[i][1])


def _emptied(pairs, batcher):
  i = int(batcher.members(0)[0])
  pairs[i] = (np.array([], np.int32), pairs[i][1])


@pytest.mark.parametrize("change", [
    _grown_past_the_largest_bucket, _shorter, _moved_to_a_larger_bucket, _emptied])
@pytest.mark.parametrize("threads", [0, 1])
def test_changed_data_raises(change, threads):
  src, tgt = _random_data(30, max_src=4)
  pairs = list(zip(src, tgt))
  batcher = Batches(pairs, None, SRC_B, TGT_B, 8, 0, shuffle=False, threads=threads)
  change(pairs, batcher)  # the file changed under a running job
  with pytest.raises(DataError, match="changed while training"):
    list(batcher.iterate_epoch(0))


# End to end.


def test_tsv_training_run_end_to_end(tmp_path, capsys, monkeypatch):
  from seq2seq_jax import trainer
  from seq2seq_jax.metric_writer import read_metrics
  from tests import tiny_config

  # The gzipped file is read through a decompressed copy in the user's cache.
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
  path = tmp_path / "dates.tsv.gz"
  with gzip.open(path, "wt", encoding="utf-8") as f:
    for src, tgt in tasks.make_task("date", 0, 500, 1, 1)["train"]:
      f.write(f"{src}\t{tgt}\tCC-BY 2.0\n")
  config = tiny_config.get_config()
  config.data.source = f"tsv:{path}"
  config.data.valid_fraction = config.data.test_fraction = 0.08
  # Subword sources: the SentencePiece model learns from the training split,
  # is saved in the workdir and comes back on resume and for inference.
  config.data.src_tokenizer = "sentencepiece"
  config.data.spm_vocab_size = 300
  config.eval.num_attention_plots = 0
  config.train.eval_every = 100  # only the final evaluation: fewer compiles
  workdir = str(tmp_path / "run")
  # Stopped half way and resumed: the data order carries on.
  assert trainer.train_and_evaluate(copy.deepcopy(config), workdir,
                                    stop_after=4) is None
  values = trainer.train_and_evaluate(copy.deepcopy(config), workdir)
  assert [e["step"] for e in read_metrics(workdir, "train")] == [2, 4, 6, 8]
  assert 0.0 <= values["exact_match"] <= 1.0 and values["decoded_examples"] > 10
  assert values["train_step_compilations"] <= values["train_bucket_shapes"] == 2
  assert "resuming from step 4" in capsys.readouterr().out
  from seq2seq_jax.inference import load_workdir
  trained = load_workdir(workdir)
  assert trained.src_tok.kind == "sentencepiece" and len(trained.src_tok.vocab) == 300
  (out,) = trained.translate(["tuesday, march 3 2020"])
  assert out["unknown"] == 0 and isinstance(out["hypothesis"], str)
