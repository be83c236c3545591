"""Scheduled sampling: the limits (eps = 1 and eps = 0) and the schedules."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from seq2seq_jax import training
from seq2seq_jax.data.tokenizers import BOS
from seq2seq_jax.models.rnn_seq2seq import RNNSeq2Seq
from seq2seq_jax.models.transformer import Transformer
from tests.train_steps import compiled_step, init_state


def models():
  return {
      "rnn": RNNSeq2Seq(10, 9, embed_dim=4, encoder_hidden=6, encoder_layers=1, decoder="luong",
                        decoder_hidden=6, decoder_layers=2, attention_dim=4, dropout=0.3),
      "transformer": Transformer(10, 9, num_layers=1, d_model=8, num_heads=2, d_ff=8,
                                 dropout=0.3, max_len=8),
  }


def data():
  rng = np.random.default_rng(0)
  src = rng.integers(4, 10, size=(4, 5)).astype(np.int32)
  src_len = np.array([5, 4, 2, 1], np.int32)
  tgt = rng.integers(4, 9, size=(4, 6)).astype(np.int32)
  tgt[:, 0] = BOS
  return src, src_len, tgt


@pytest.mark.parametrize("kind", ["rnn", "transformer"])
def test_gold_probability_one_is_teacher_forcing(kind):
  model = models()[kind]
  src, src_len, tgt = data()
  variables = model.init(jax.random.key(0), src, src_len, tgt)
  rngs = {"dropout": jax.random.key(1), "sampling": jax.random.key(2)}
  forced, _ = model.apply(variables, src, src_len, tgt, train=True, rngs=rngs)
  mixed, aux = model.apply(variables, src, src_len, tgt, train=True, rngs=rngs,
                           gold_prob=jnp.float32(1.0))
  np.testing.assert_array_equal(np.asarray(mixed), np.asarray(forced))
  assert float(aux["gold_fraction"]) == 1.0


@pytest.mark.parametrize("kind", ["rnn", "transformer"])
def test_gold_probability_zero_feeds_only_predictions(kind):
  """With eps = 0 and no dropout, the model reads its own argmax at every
  step after <bos>: its logits equal greedy step-by-step decoding's."""
  model = models()[kind]
  src, src_len, tgt = data()
  variables = model.init(jax.random.key(0), src, src_len, tgt)
  logits, aux = model.apply(variables, src, src_len, tgt, train=False,
                            rngs={"sampling": jax.random.key(2)}, gold_prob=jnp.float32(0.0))
  assert float(aux["gold_fraction"]) == pytest.approx(1 / tgt.shape[1])  # only <bos>
  if kind == "transformer":
    # Two passes: the second reads the first (teacher-forced) pass's argmax.
    first, _ = model.apply(variables, src, src_len, tgt)
    fed = np.concatenate([tgt[:, :1], np.argmax(first, -1)[:, :-1]], 1).astype(np.int32)
    want, _ = model.apply(variables, src, src_len, fed)
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)
    return
  memory = model.apply(variables, src, src_len, method=model.encode)
  state = model.apply(variables, memory, method=model.init_decode_state)
  token = jnp.full((4,), BOS, jnp.int32)
  steps = []
  for _ in range(tgt.shape[1]):
    lg, state, _ = model.apply(variables, state, token, method=model.decode_step)
    steps.append(lg)
    token = jnp.argmax(lg, -1).astype(jnp.int32)
  np.testing.assert_allclose(np.stack(steps, 1), logits, rtol=1e-5, atol=1e-5)


def test_schedules_match_their_formulas():
  ss = ml_collections.ConfigDict(dict(schedule="linear", k=1.0, c=0.01, eps_min=0.2,
                                      predictions="argmax"))
  assert training.gold_probability(ss, 10) == pytest.approx(0.9)
  assert training.gold_probability(ss, 1000) == 0.2
  ss.schedule, ss.k = "exponential", 0.99
  assert training.gold_probability(ss, 50) == pytest.approx(0.99 ** 50)
  ss.schedule, ss.k, ss.eps_min = "inverse_sigmoid", 100.0, 0.0
  assert training.gold_probability(ss, 300) == pytest.approx(100 / (100 + math.exp(3)))
  assert 0.0 <= training.gold_probability(ss, 10 ** 7) < 1e-200  # no overflow
  ss.schedule, ss.k = "constant", 0.75
  assert training.gold_probability(ss, 123) == 0.75
  ss.schedule = "none"
  assert training.gold_probability(ss, 5) == 1.0


def test_changing_gold_probability_does_not_recompile():
  model = models()["rnn"]
  src, src_len, tgt = data()
  batch = {"src": src, "src_len": src_len, "tgt_in": tgt,
           "tgt_out": np.roll(tgt, -1, 1), "weights": np.ones(tgt.shape, np.float32)}
  from configs import default
  cfg = default.get_config().train
  state = init_state(model, cfg, jax.random.key(0), batch)
  step = compiled_step(scheduled_sampling=True)
  for eps in (1.0, 0.7, 0.3):
    state, m = step(state, batch, jax.random.key(1), np.float32(eps))
    assert np.isfinite(float(m["loss"]))
  assert step.cache_size() == 1
