"""Loss, schedules and the train step."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import default
from seq2seq_jax import training
from seq2seq_jax.models.rnn_seq2seq import RNNSeq2Seq


def test_masked_cross_entropy_ignores_padding():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(2, 5, 7)).astype(np.float32))
  targets = rng.integers(0, 7, size=(2, 5))
  weights = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.float32)
  loss, count = training.masked_cross_entropy(logits, jnp.asarray(targets), jnp.asarray(weights))
  # NumPy reference over the real tokens only.
  lp = np.asarray(jax.nn.log_softmax(logits))
  want = -np.mean([lp[b, t, targets[b, t]] for b in range(2) for t in range(5) if weights[b, t]])
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  assert float(count) == 8
  # Changing padded targets and padded logits changes nothing.
  targets2 = targets.copy()
  targets2[0, 3:] = (targets2[0, 3:] + 1) % 7
  logits2 = logits.at[0, 3:].set(100.0)
  loss2, _ = training.masked_cross_entropy(logits2, jnp.asarray(targets2), jnp.asarray(weights))
  assert float(loss2) == float(loss)


def _train_cfg(**overrides):
  cfg = default.get_config().train
  cfg.update(overrides)
  return cfg


@pytest.mark.parametrize("decay", ["cosine", "linear", "constant"])
def test_schedule_warmup_then_decay(decay):
  cfg = _train_cfg(learning_rate=1e-3, warmup_steps=10, num_steps=110, decay=decay,
                   end_lr_factor=0.1)
  lr = training.learning_rate_schedule(cfg)
  assert float(lr(0)) == 0.0
  np.testing.assert_allclose(float(lr(5)), 5e-4, rtol=1e-6)
  np.testing.assert_allclose(float(lr(10)), 1e-3, rtol=1e-6)
  end = 1e-3 if decay == "constant" else 1e-4
  np.testing.assert_allclose(float(lr(110)), end, rtol=1e-5)
  values = [float(lr(s)) for s in range(10, 111, 10)]
  assert all(b <= a + 1e-12 for a, b in zip(values, values[1:]))


def test_train_step_learns_and_ignores_filler_rows():
  model = RNNSeq2Seq(12, 12, embed_dim=8, encoder_hidden=16, encoder_layers=1,
                     decoder_hidden=16, attention_dim=8)
  rng = np.random.default_rng(0)
  src = rng.integers(4, 12, size=(8, 5)).astype(np.int32)
  tgt = src[:, ::-1]
  batch = {"src": src, "src_len": np.full(8, 5, np.int32),
           "tgt_in": np.concatenate([np.ones((8, 1), np.int32), tgt], 1),
           "tgt_out": np.concatenate([tgt, np.full((8, 1), 2, np.int32)], 1),
           "weights": np.ones((8, 6), np.float32)}
  cfg = _train_cfg(learning_rate=1e-2, warmup_steps=0, num_steps=60, decay="constant")
  state = training.create_train_state(model, cfg, jax.random.key(0), batch)
  step = training.jit_train_step()
  losses = []
  for _ in range(60):
    state, m = step(state, batch, jax.random.key(1))
    losses.append(float(m["loss"]))
  assert losses[-1] < 0.5 * losses[0]
  assert int(state.step) == 60 and step._cache_size() == 1  # one compile for one shape
  # Filler rows (weight 0, src_len 0) leave the gradient unchanged.
  filler = {k: np.concatenate([v, np.zeros_like(v[:4])]) for k, v in batch.items()}

  @jax.jit
  def grad(params, b):
    return jax.grad(lambda p: training.masked_cross_entropy(
        model.apply({"params": p}, b["src"], b["src_len"], b["tgt_in"])[0],
        b["tgt_out"], b["weights"])[0])(params)

  g1, g2 = grad(state.params, batch), grad(state.params, filler)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_label_smoothing_against_numpy():
  rng = np.random.default_rng(3)
  logits = rng.normal(size=(2, 3, 5)).astype(np.float32)
  targets = rng.integers(0, 5, size=(2, 3))
  weights = np.array([[1, 1, 0], [1, 1, 1]], np.float32)
  loss, _ = training.masked_cross_entropy(jnp.asarray(logits), jnp.asarray(targets),
                                          jnp.asarray(weights), label_smoothing=0.2)
  lp = np.asarray(jax.nn.log_softmax(jnp.asarray(logits)))
  soft = np.full((2, 3, 5), 0.2 / 5)
  for b in range(2):
    for t in range(3):
      soft[b, t, targets[b, t]] += 0.8
  per_token = -(soft * lp).sum(-1)
  np.testing.assert_allclose(loss, (per_token * weights).sum() / weights.sum(), rtol=1e-5)


def test_rsqrt_schedule():
  cfg = _train_cfg(learning_rate=1e-3, warmup_steps=100, num_steps=10_000, decay="rsqrt")
  lr = training.learning_rate_schedule(cfg)
  np.testing.assert_allclose(float(lr(50)), 5e-4, rtol=1e-6)
  np.testing.assert_allclose(float(lr(100)), 1e-3, rtol=1e-6)
  np.testing.assert_allclose(float(lr(400)), 1e-3 * np.sqrt(100 / 400), rtol=1e-5)
