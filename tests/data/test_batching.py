"""Tests for seq2seq_jax.data.batching."""

import copy
import gzip

import numpy as np
import pytest

from seq2seq_jax.data import batching, sources, tasks
from seq2seq_jax.data.batching import BucketBatcher
from seq2seq_jax.data.windowed import WindowedBatcher
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


def _batcher(n=203, batch_size=8, seed=1, **kwargs):
  src, tgt = _random_data(n)
  return src, tgt, BucketBatcher(src, tgt, SRC_B, TGT_B, batch_size, seed,
                                 **kwargs)


def _assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])


def _epoch(batcher, epoch):
  n = batcher.steps_per_epoch
  return [batcher.batch_at(epoch * n + k) for k in range(n)]


def test_parse_boundaries():
  assert batching.parse_boundaries("8,16,32") == (8, 16, 32)
  assert batching.parse_boundaries(" 8, 16 ") == (8, 16)
  assert batching.parse_boundaries([4, np.int64(9)]) == (4, 9)
  for bad in ["", "8,,16", "16,8", "8,8", "0,4", "-4,8", "8.5", [], [3, 2],
              [1.0, 2.0], [True, 2], None, 8]:
    with pytest.raises(ConfigError) as info:
      batching.parse_boundaries(bad, "data.src_boundaries")
    assert "data.src_boundaries" in str(info.value)
    assert repr(bad) in str(info.value)


def test_bucket_for():
  assert batching.bucket_for(1, (4, 8)) == 4
  assert batching.bucket_for(4, (4, 8)) == 4
  assert batching.bucket_for(5, (4, 8)) == 8
  assert batching.bucket_for(9, (4, 8)) == -1


def test_encode_pairs():
  tok = CharTokenizer.build(["abc"])
  src, tgt = batching.encode_pairs([("ab", "c"), ("cab", "")], tok, tok)
  assert [s.tolist() for s in src] == [tok.encode("ab"), tok.encode("cab")]
  assert [t.tolist() for t in tgt] == [tok.encode("c"), []]
  assert all(a.dtype == np.int32 for a in src + tgt)


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


def test_filler_rows():
  src, tgt = _random_data(13)
  batcher = BucketBatcher(src, tgt, (12,), (13,), 5, seed=0)
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
  batcher = BucketBatcher(src, tgt, (4,), (4,), batch_size=3, seed=0,
                          shuffle=False)
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


def test_epochs_differ_and_depend_only_on_seed():
  src, tgt, batcher = _batcher(seed=1)
  order = lambda b, e: np.concatenate([x["index"] for x in _epoch(b, e)])
  assert not np.array_equal(order(batcher, 0), order(batcher, 1))
  other = BucketBatcher(src, tgt, SRC_B, TGT_B, 8, seed=1)
  np.testing.assert_array_equal(order(batcher, 3), order(other, 3))
  reseeded = BucketBatcher(src, tgt, SRC_B, TGT_B, 8, seed=2)
  assert not np.array_equal(order(batcher, 0), order(reseeded, 0))


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
    fresh = BucketBatcher(src, tgt, SRC_B, TGT_B, 8, seed=1)
    _assert_batches_equal(fresh.batch_at(k), reference[k])
    resumed = fresh.iterate(start_step=k)
    for j in range(k, min(k + 4, len(reference))):
      _assert_batches_equal(next(resumed), reference[j])


def test_restart_does_not_build_earlier_epochs(monkeypatch):
  _, _, batcher = _batcher()
  built = []
  original = BucketBatcher._build_plan

  def spy(self, epoch):
    built.append(epoch)
    return original(self, epoch)

  monkeypatch.setattr(BucketBatcher, "_build_plan", spy)
  stream = batcher.iterate(start_step=7 * batcher.steps_per_epoch - 1)
  for _ in range(3):
    next(stream)
  assert built == [6, 7]


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


def test_too_long_error_names_fields():
  src, tgt = _random_data(50, max_src=20, max_tgt=3)
  with pytest.raises(DataError) as info:
    BucketBatcher(src, tgt, SRC_B, TGT_B, 8, seed=0)
  message = str(info.value)
  num_long = sum(len(s) > 12 for s in src)
  assert message.startswith(f"{num_long} of 50 examples")
  assert f"longest source has {max(map(len, src))} tokens" in message
  assert "data.src_boundaries" in message
  assert "data.tgt_boundaries" not in message
  assert "\n" not in message

  src, tgt = _random_data(50, max_src=3, max_tgt=30)
  with pytest.raises(DataError, match="data.tgt_boundaries"):
    BucketBatcher(src, tgt, SRC_B, TGT_B, 8, seed=0)


def test_too_long_drop():
  src, tgt = _random_data(60, max_src=20, max_tgt=20)
  fits = [i for i in range(60) if len(src[i]) <= 12 and len(tgt[i]) + 1 <= 13]
  batcher = BucketBatcher(src, tgt, SRC_B, TGT_B, 8, seed=0, too_long="drop")
  assert batcher.num_dropped == 60 - len(fits) > 0
  assert batcher.num_examples == len(fits)
  index = np.concatenate([b["index"] for b in _epoch(batcher, 0)])
  assert sorted(index[index >= 0].tolist()) == fits


def test_too_long_truncate():
  src, tgt = _random_data(60, max_src=20, max_tgt=20)
  batcher = BucketBatcher(src, tgt, SRC_B, TGT_B, 8, seed=0,
                          too_long="truncate")
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
  batcher = BucketBatcher(long_src, tgt[:3], SRC_B, TGT_B, 8, seed=0,
                          too_long="drop")
  assert batcher.steps_per_epoch == 0 and list(batcher.iterate_epoch()) == []
  with pytest.raises(DataError, match="no examples"):
    batcher.batch_at(0)
  with pytest.raises(ConfigError, match="too_long"):
    BucketBatcher(src, tgt, SRC_B, TGT_B, 8, seed=0, too_long="skip")
  with pytest.raises(ConfigError, match="batch_size"):
    BucketBatcher(src, tgt, SRC_B, TGT_B, 0, seed=0)
  with pytest.raises(ConfigError, match="data.tgt_boundaries"):
    BucketBatcher(src, tgt, SRC_B, "9,5", 8, seed=0)
  with pytest.raises(DataError, match="empty source"):
    BucketBatcher(src + [np.array([], np.int32)], tgt + [tgt[0]], SRC_B,
                  TGT_B, 8, seed=0)


# WindowedBatcher: the same batches from a stream, sorted within windows.


class _CountingStream:
  """`n` generated examples, made only when asked for; counts them."""

  def __init__(self, n):
    self.n, self.produced, self.passes = n, 0, 0

  def open(self):
    self.passes += 1
    self.produced = 0
    for k in range(self.n):
      self.produced += 1
      # Example k is recognisable from its lengths and first token.
      yield [4 + k % 26] * (1 + k % 12), [4] * ((k * 7) % 13)


def _windowed(n=203, batch_size=8, seed=1, window=20, **kwargs):
  src, tgt = _random_data(n)
  return src, tgt, WindowedBatcher(list(zip(src, tgt)), None, SRC_B, TGT_B,
                                   batch_size, seed, window, **kwargs)


def _indices(batches):
  index = np.concatenate([b["index"] for b in batches])
  return index[index >= 0]


def test_windowed_memory_is_bounded_and_every_example_seen_once():
  stream = _CountingStream(200_000)
  pairs = sources.PairStream(stream.open, "200k generated examples")
  batcher = WindowedBatcher(pairs, None, SRC_B, TGT_B, 32, seed=0, window=1000)
  assert stream.passes == 1  # the census, which keeps nothing
  assert batcher.num_examples == 200_000
  # Read ahead of what has been batched: one window plus partial buckets.
  bound = 1000 + len(SRC_B) * len(TGT_B) * (32 - 1)
  seen = np.zeros(200_000, np.int64)
  batched = most_ahead = steps = 0
  for batch in batcher.iterate_epoch(0):
    real = batch["index"] >= 0
    index = batch["index"][real]
    batched += len(index)
    most_ahead = max(most_ahead, stream.produced - batched)
    steps += 1
    seen[index] += 1
    np.testing.assert_array_equal(batch["src_len"][real], 1 + index % 12)
    np.testing.assert_array_equal(batch["src"][real, 0], 4 + index % 26)
    np.testing.assert_array_equal(batch["tgt_len"][real], (index * 7) % 13 + 1)
  assert stream.passes == 2
  assert (seen == 1).all()
  assert steps == batcher.steps_per_epoch
  assert 1000 <= most_ahead <= bound


def test_windowed_matches_bucket_batcher_counts_and_shapes():
  src, tgt, windowed = _windowed()
  bucketed = BucketBatcher(src, tgt, SRC_B, TGT_B, 8, seed=1)
  assert windowed.bucket_counts() == bucketed.bucket_counts()
  assert windowed.batch_shapes() == bucketed.batch_shapes()
  assert windowed.steps_per_epoch == bucketed.steps_per_epoch
  assert windowed.num_examples == 203
  for epoch in (0, 1, 4):
    batches = list(windowed.iterate_epoch(epoch))
    assert len(batches) == windowed.steps_per_epoch
    assert sorted(_indices(batches).tolist()) == list(range(203))
    # 203 examples in batches of 8: real rows and filler rows, both checked below.
    assert 0 < sum(int((b["index"] < 0).sum()) for b in batches) < len(batches) * 8
    for batch in batches:
      assert batch.keys() == set(KEYS)
      s, t = batch["src"].shape[1], batch["tgt_in"].shape[1]
      assert (s, t) in windowed.batch_shapes() and batch["index"].shape == (8,)
      for row, i in enumerate(batch["index"]):
        if i >= 0:  # the smallest bucket that fits, the example's own ids
          assert batching.bucket_for(len(src[i]), SRC_B) == s
          assert batching.bucket_for(len(tgt[i]) + 1, TGT_B) == t
          np.testing.assert_array_equal(batch["src"][row, :len(src[i])], src[i])
          np.testing.assert_array_equal(batch["tgt_out"][row, :len(tgt[i]) + 1],
                                        np.append(tgt[i], EOS))
        else:
          assert batch["src_len"][row] == 0 and not batch["weights"][row].any()


def test_windowed_resume_matches_continuing_stream():
  src, tgt, batcher = _windowed()
  spe = batcher.steps_per_epoch
  stream = batcher.iterate()
  reference = [next(stream) for _ in range(2 * spe + 5)]
  for k in (0, 1, spe - 1, spe, spe + 3, 2 * spe + 1):
    fresh = WindowedBatcher(list(zip(src, tgt)), None, SRC_B, TGT_B, 8, seed=1,
                            window=20)
    _assert_batches_equal(fresh.batch_at(k), reference[k])
    resumed = fresh.iterate(start_step=k)
    for j in range(k, min(k + 4, len(reference))):
      _assert_batches_equal(next(resumed), reference[j])


def test_windowed_epochs_differ_and_depend_only_on_seed():
  src, tgt, batcher = _windowed(seed=1)
  order = lambda b, e: np.concatenate([x["index"] for x in b.iterate_epoch(e)])
  assert not np.array_equal(order(batcher, 0), order(batcher, 1))
  _, _, other = _windowed(seed=1)
  np.testing.assert_array_equal(order(batcher, 3), order(other, 3))
  _, _, reseeded = _windowed(seed=2)
  assert not np.array_equal(order(batcher, 0), order(reseeded, 0))


def test_windowed_sorts_within_windows_only():
  # A window of 1 cannot reorder: an example waits only until its bucket has
  # a full batch, so batches come close to stream order. A window of the
  # whole data shuffles it all, as BucketBatcher does.
  def displacement(window):
    _, _, batcher = _windowed(window=window)
    index = _indices(list(batcher.iterate_epoch(0)))
    assert sorted(index) == list(range(203))
    return np.mean(np.abs(index - np.arange(203)))

  assert displacement(1) < 25 < 50 < displacement(10_000)


def test_windowed_too_long_is_checked_before_training():
  src, tgt = _random_data(50, max_src=20, max_tgt=3)
  with pytest.raises(DataError) as expected:
    BucketBatcher(src, tgt, SRC_B, TGT_B, 8, seed=0)
  with pytest.raises(DataError) as info:
    WindowedBatcher(list(zip(src, tgt)), None, SRC_B, TGT_B, 8, 0, window=8)
  assert str(info.value) == str(expected.value)
  for mode in ("drop", "truncate"):
    windowed = WindowedBatcher(list(zip(src, tgt)), None, SRC_B, TGT_B, 8, 0,
                               window=8, too_long=mode)
    bucketed = BucketBatcher(src, tgt, SRC_B, TGT_B, 8, 0, too_long=mode)
    assert windowed.bucket_counts() == bucketed.bucket_counts()
    assert (windowed.num_dropped, windowed.num_truncated) == (
        bucketed.num_dropped, bucketed.num_truncated)
    assert sorted(_indices(list(windowed.iterate_epoch(0)))) == sorted(
        _indices(list(bucketed.iterate_epoch(0))))


def test_windowed_bad_arguments_and_changed_data():
  src, tgt = _random_data(30)
  pairs = list(zip(src, tgt))
  with pytest.raises(ValueError, match="re-iterable"):
    WindowedBatcher(iter(pairs), None, SRC_B, TGT_B, 8, 0, window=8)
  with pytest.raises(ConfigError, match="data.bucket_window"):
    WindowedBatcher(pairs, None, SRC_B, TGT_B, 8, 0, window=0)
  with pytest.raises(DataError, match="empty source"):
    WindowedBatcher(pairs + [([], [5])], None, SRC_B, TGT_B, 8, 0, window=8)
  tok = CharTokenizer.build(["abc"])
  texts = [("ab", "c"), ("cab", "")]
  windowed = WindowedBatcher(texts, batching.pair_encoder(tok, tok), (4,), (4,),
                             3, 0, window=2)
  (batch,) = windowed.iterate_epoch(0)
  bucketed = BucketBatcher(*batching.encode_pairs(texts, tok, tok), (4,), (4,),
                           3, 0)
  np.testing.assert_array_equal(batch["src"], bucketed.batch_at(0)["src"])
  del pairs[-1]  # the file changed under a running job
  windowed = WindowedBatcher(pairs + [pairs[0]], None, SRC_B, TGT_B, 8, 0, 8)
  windowed._pairs = pairs
  with pytest.raises(DataError, match="changed while training"):
    list(windowed.iterate_epoch(0))


def test_windowed_training_run_end_to_end(tmp_path, capsys):
  from seq2seq_jax import trainer
  from seq2seq_jax.metric_writer import read_metrics
  from tests import tiny_config

  path = tmp_path / "dates.tsv.gz"
  with gzip.open(path, "wt", encoding="utf-8") as f:
    for src, tgt in tasks.make_task("date", 0, 500, 1, 1)["train"]:
      f.write(f"{src}\t{tgt}\tCC-BY 2.0\n")
  config = tiny_config.get_config()
  config.data.source = f"tsv:{path}"
  config.data.bucket_window = 64
  config.data.valid_fraction = config.data.test_fraction = 0.08
  # Subword sources: the SentencePiece model learns from the stream, is saved
  # in the workdir and comes back on resume and for inference.
  config.data.src_tokenizer = "sentencepiece"
  config.data.spm_vocab_size = 300
  config.eval.num_attention_plots = 0
  config.train.eval_every = 100  # only the final evaluation: fewer compiles
  workdir = str(tmp_path / "run")
  # Stopped half way and resumed: the streamed data order carries on.
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


def test_unknown_tokens_are_counted_by_both_batchers():
  src = [np.array([5, UNK, 6]), np.array([UNK, UNK]), np.array([7])]
  tgt = [np.array([8]), np.array([9, UNK]), np.array([UNK, 4, 5])]
  expected = {"src_unknown": 3, "src_tokens": 6, "tgt_unknown": 2, "tgt_tokens": 6}
  assert BucketBatcher(src, tgt, SRC_B, TGT_B, 2, seed=0).unknown_counts == expected
  windowed = WindowedBatcher(list(zip(src, tgt)), None, SRC_B, TGT_B, 2, seed=0, window=2)
  assert windowed.unknown_counts == expected
  # From text: characters the vocabulary never saw become <unk>, and count.
  tok = CharTokenizer.build(["abc"])
  ids = [np.array(tok.encode(t)) for t in ("abz", "zz")]
  counted = BucketBatcher(ids, ids, SRC_B, TGT_B, 2, seed=0).unknown_counts
  assert counted["src_unknown"] == counted["tgt_unknown"] == 3
