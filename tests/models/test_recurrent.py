"""Cells against NumPy equations; masking and direction of recurrent layers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seq2seq_jax.models import recurrent


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def np_step(kind, p, carry, x):
  """The textbook equations, one gate at a time."""
  if kind == "rnn":
    return np.tanh(x @ p["w_i"] + p["b_i"] + carry @ p["w_h"])
  if kind == "gru":
    h = carry
    W, U, b, bh = p["w_i"], p["w_h"], p["b_i"], p["b_h"]
    H = h.shape[-1]
    g = lambda M, i: M[..., i * H:(i + 1) * H]
    r = sigmoid(x @ g(W, 0) + g(b, 0) + h @ g(U, 0) + g(bh, 0))
    z = sigmoid(x @ g(W, 1) + g(b, 1) + h @ g(U, 1) + g(bh, 1))
    n = np.tanh(x @ g(W, 2) + g(b, 2) + r * (h @ g(U, 2) + g(bh, 2)))
    return (1 - z) * n + z * h
  c, h = carry
  H = h.shape[-1]
  pre = x @ p["w_i"] + p["b_i"] + h @ p["w_h"]
  i, f, gg, o = (pre[..., k * H:(k + 1) * H] for k in range(4))
  c = sigmoid(f) * c + sigmoid(i) * np.tanh(gg)
  return (c, sigmoid(o) * np.tanh(c))


def np_run(kind, p, x, length, reverse=False):
  """One sequence x [time, in] -> outputs [time, H] (zero past length), final."""
  H = p["w_h"].shape[0]
  carry = (np.zeros(H), np.zeros(H)) if kind == "lstm" else np.zeros(H)
  out = np.zeros((x.shape[0], H))
  order = range(length - 1, -1, -1) if reverse else range(length)
  for t in order:
    carry = np_step(kind, p, carry, x[t])
    out[t] = carry[1] if kind == "lstm" else carry
  return out, carry


@pytest.mark.parametrize("kind", recurrent.CELLS)
def test_cell_step_matches_numpy(kind):
  rng = np.random.default_rng(1)
  cell = recurrent.Cell(kind, 5, 4)
  p = cell.init(jax.random.key(0))["params"]
  p = {k: np.asarray(v) + rng.normal(size=v.shape) * 0.1 for k, v in p.items()}  # non-trivial biases
  x = rng.normal(size=(3, 5))
  h = rng.normal(size=(3, 4))
  carry = (rng.normal(size=(3, 4)), h) if kind == "lstm" else h
  xp = recurrent.project(p, jnp.asarray(x))
  got = recurrent.cell_step(kind, p, jax.tree.map(jnp.asarray, carry), xp)
  want = np_step(kind, p, carry, x)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", recurrent.CELLS)
@pytest.mark.parametrize("reverse", [False, True])
def test_run_layer_masks_padding(kind, reverse):
  rng = np.random.default_rng(2)
  p = recurrent.Cell(kind, 3, 4).init(jax.random.key(1))["params"]
  p = jax.tree.map(np.asarray, p)
  x = rng.normal(size=(3, 6, 3)).astype(np.float32)
  lengths = np.array([6, 4, 1])
  outs, final = recurrent.run_layer(kind, p, recurrent.project(p, jnp.asarray(x)),
                                    jnp.asarray(lengths), reverse=reverse)
  for b in range(3):
    want_out, want_final = np_run(kind, p, x[b], lengths[b], reverse)
    np.testing.assert_allclose(outs[b], want_out, rtol=1e-4, atol=1e-5)
    got_final = jax.tree.map(lambda a: np.asarray(a)[b], final)
    for g, w in zip(jax.tree.leaves(got_final), jax.tree.leaves(want_final)):
      np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", recurrent.CELLS)
def test_encoder_padding_invariance(kind):
  enc = recurrent.RecurrentEncoder(kind, 3, 5, num_layers=2, bidirectional=True)
  rng = np.random.default_rng(3)
  x = rng.normal(size=(2, 4, 3)).astype(np.float32)
  lengths = jnp.array([4, 2])
  variables = enc.init(jax.random.key(0), x, lengths)
  out, finals = enc.apply(variables, x, lengths)
  # Same sequences with more padding (garbage in it) and in a bigger batch.
  padded = np.concatenate([x, rng.normal(size=(2, 5, 3)).astype(np.float32)], axis=1)
  padded[1, 2:] = rng.normal(size=(7, 3))
  out2, finals2 = enc.apply(variables, padded, lengths)
  np.testing.assert_allclose(out2[:, :4], out, rtol=1e-5, atol=1e-6)
  assert np.all(np.asarray(out2)[1, 2:] == 0.0)
  for a, b in zip(jax.tree.leaves(finals), jax.tree.leaves(finals2)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
