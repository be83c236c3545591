"""The Transformer on the model contract: cache, masks, padding, training."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seq2seq_jax.errors import LengthError
from seq2seq_jax.models.transformer import Transformer, sinusoidal_positions
from tests.models.contract import decode_step_by_step
from tests.train_steps import compiled_step, init_state

SRC_V, TGT_V = 13, 11


def make(**kwargs):
  args = dict(num_layers=2, d_model=16, num_heads=4, d_ff=32, dropout=0.1, max_len=12)
  args.update(kwargs)
  return Transformer(SRC_V, TGT_V, **args)


def batch(rng, src_time=6, tgt_time=5):
  src = rng.integers(4, SRC_V, size=(3, src_time)).astype(np.int32)
  src_len = np.array([src_time, 3, 1], np.int32)
  tgt = rng.integers(4, TGT_V, size=(3, tgt_time)).astype(np.int32)
  return src, src_len, tgt


@pytest.mark.parametrize("kwargs", [
    dict(norm="pre"), dict(norm="post", positional="learned", tie_output=True)])
def test_cached_steps_equal_teacher_forcing(kwargs):
  model = make(**kwargs)
  src, src_len, tgt = batch(np.random.default_rng(0))
  variables = model.init(jax.random.key(0), src, src_len, tgt)
  logits, aux = model.apply(variables, src, src_len, tgt)
  step_logits, step_attn = decode_step_by_step(model, variables, src, src_len, tgt)
  np.testing.assert_allclose(step_logits, logits, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.stack(step_attn, 2), aux["attention"], rtol=1e-4, atol=1e-5)
  assert aux["attention"].shape == (3, 4, 5, 6) and len(aux["cross_attention"]) == 2


def test_no_attention_to_future_or_padding():
  model = make()
  rng = np.random.default_rng(1)
  src, src_len, tgt = batch(rng)
  variables = model.init(jax.random.key(0), src, src_len, tgt)
  logits, aux = model.apply(variables, src, src_len, tgt)
  # Changing the input token at position 3 changes nothing before it.
  tgt2 = tgt.copy()
  tgt2[:, 3] = (tgt2[:, 3] + 1 - 4) % (TGT_V - 4) + 4
  logits2, _ = model.apply(variables, src, src_len, tgt2)
  np.testing.assert_allclose(logits2[:, :3], logits[:, :3], rtol=1e-5, atol=1e-6)
  assert not np.allclose(logits2[:, 3], logits[:, 3])
  # Changing padded source tokens, or adding padding, changes nothing.
  src2 = np.concatenate([src, rng.integers(0, SRC_V, size=(3, 3))], 1).astype(np.int32)
  for b in range(3):
    src2[b, src_len[b]:] = rng.integers(0, SRC_V, size=src2.shape[1] - src_len[b])
  logits3, aux3 = model.apply(variables, src2, src_len, tgt)
  np.testing.assert_allclose(logits3, logits, rtol=1e-5, atol=1e-5)
  w = np.asarray(aux3["attention"])
  pad = np.arange(src2.shape[1])[None, None, None] >= src_len[:, None, None, None]
  assert np.all(w[np.broadcast_to(pad, w.shape)] == 0.0)
  np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)


def test_sequences_past_max_len_are_an_error():
  """Wider than the positions: one LengthError from encoding and from
  teacher forcing, not clamped position lookups. max_len itself fits."""
  model = make(max_len=6)
  src, src_len, tgt = batch(np.random.default_rng(3), src_time=6, tgt_time=6)
  variables = model.init(jax.random.key(0), src, src_len, tgt)
  logits, _ = model.apply(variables, src, src_len, tgt)
  assert logits.shape == (3, 6, TGT_V)
  wide_src = np.concatenate([src, src[:, :1]], 1)
  wide_tgt = np.concatenate([tgt, tgt[:, :1]], 1)
  too_long = " needs more than the Transformer's 6 positions (config.model.transformer.max_len)"
  calls = [(lambda: model.apply(variables, wide_src, src_len, method=model.encode), "a source"),
           (lambda: model.apply(variables, wide_src, src_len, tgt), "a source"),
           (lambda: model.apply(variables, src, src_len, wide_tgt), "a target")]
  for call, side in calls:
    with pytest.raises(LengthError) as error:
      call()
    assert str(error.value) == side + " 7 tokens wide" + too_long


def test_sinusoidal_positions_formula():
  table = sinusoidal_positions(7, 6)
  pos, i = 5, 1
  np.testing.assert_allclose(table[pos, 2 * i], np.sin(pos / 10000 ** (2 * i / 6)), rtol=1e-6)
  np.testing.assert_allclose(table[pos, 2 * i + 1], np.cos(pos / 10000 ** (2 * i / 6)), rtol=1e-6)


def test_shared_embeddings_use_one_table():
  model = Transformer(9, 9, num_layers=1, d_model=8, num_heads=2, d_ff=8, max_len=8,
                      share_embeddings=True, tie_output=True)
  x = np.ones((1, 3), np.int32)
  params = model.init(jax.random.key(0), x, np.array([3]), x)["params"]
  assert "src_embed" not in params and "output" not in params and "tgt_embed" in params


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_pre_and_post_ln_train(norm):
  model = make(norm=norm, dropout=0.0)
  rng = np.random.default_rng(2)
  src = rng.integers(4, SRC_V, size=(8, 5)).astype(np.int32)
  tgt = np.clip(src[:, ::-1], 4, TGT_V - 1)
  b = {"src": src, "src_len": np.full(8, 5, np.int32),
       "tgt_in": np.concatenate([np.ones((8, 1), np.int32), tgt], 1),
       "tgt_out": np.concatenate([tgt, np.full((8, 1), 2, np.int32)], 1),
       "weights": np.ones((8, 6), np.float32)}
  from configs import default
  cfg = default.get_config().train
  cfg.update(learning_rate=3e-3, warmup_steps=5, num_steps=40, decay="rsqrt", label_smoothing=0.1)
  state = init_state(model, cfg, jax.random.key(0), b)
  step = compiled_step(label_smoothing=cfg.label_smoothing)
  losses = []
  for _ in range(40):
    state, m = step(state, b, jax.random.key(1))
    losses.append(float(m["loss"]))
  assert np.isfinite(losses).all() and losses[-1] < 0.6 * losses[0]
