"""Attention primitives against NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seq2seq_jax.models import attention


def np_masked_softmax(scores, keep):
  out = np.zeros_like(scores)
  for idx in np.ndindex(scores.shape[:-1]):
    row, k = scores[idx], keep[idx]
    if k.any():
      e = np.exp(row[k] - row[k].max())
      out[idx][k] = e / e.sum()
  return out


@pytest.fixture
def rng():
  return np.random.default_rng(0)


def test_masked_softmax_per_row_lengths(rng):
  scores = rng.normal(size=(4, 6)).astype(np.float32) * 3
  lens = np.array([6, 3, 1, 0])
  got = np.asarray(attention.masked_softmax(jnp.asarray(scores), jnp.asarray(lens)))
  keep = np.arange(6)[None, :] < lens[:, None]
  np.testing.assert_allclose(got, np_masked_softmax(scores, keep), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(got[:3].sum(-1), 1.0, rtol=1e-6)
  assert np.all(got[~keep] == 0.0)  # exactly zero on padding
  assert np.all(got[3] == 0.0) and np.isfinite(got).all()  # no valid key: zeros, not NaN


def test_masked_softmax_per_query_lengths_and_heads(rng):
  scores = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)  # batch, heads, queries, keys
  lens = np.array([[5, 2, 1, 4], [3, 3, 5, 1]])  # per query
  got = np.asarray(attention.masked_softmax(jnp.asarray(scores), jnp.asarray(lens)))
  keep = np.broadcast_to((np.arange(5) < lens[..., None])[:, None], scores.shape)
  np.testing.assert_allclose(got, np_masked_softmax(scores, keep), rtol=1e-5, atol=1e-7)
  assert np.all(got[~keep] == 0.0)
  # Per-row lengths with queries: every query of a row shares the row's length.
  row_lens = np.array([2, 5])
  got = np.asarray(attention.masked_softmax(jnp.asarray(scores[:, 0]), jnp.asarray(row_lens)))
  keep = np.broadcast_to(np.arange(5)[None, None] < row_lens[:, None, None], got.shape)
  np.testing.assert_allclose(got, np_masked_softmax(scores[:, 0], keep), rtol=1e-5, atol=1e-7)


def test_masked_softmax_with_explicit_mask(rng):
  scores = rng.normal(size=(2, 4, 4)).astype(np.float32)
  causal = np.tril(np.ones((4, 4), bool))
  lens = np.array([4, 2])
  got = np.asarray(attention.masked_softmax(jnp.asarray(scores), jnp.asarray(lens),
                                            mask=jnp.asarray(causal)))
  keep = causal[None] & (np.arange(4)[None, None] < lens[:, None, None])
  np.testing.assert_allclose(got, np_masked_softmax(scores, keep), rtol=1e-5, atol=1e-7)


def test_additive_attention_against_numpy(rng):
  batch, keys, dq, dk, dv, a = 3, 5, 4, 6, 6, 7
  module = attention.AdditiveAttention(a, dq, dk)
  q = rng.normal(size=(batch, dq)).astype(np.float32)
  k = rng.normal(size=(batch, keys, dk)).astype(np.float32)
  v = k  # keys = values, as in Bahdanau
  lens = np.array([5, 2, 1])
  variables = module.init(jax.random.key(0), q, k, v, lens)
  (context, weights) = module.apply(variables, q, k, v, lens)
  p = jax.tree.map(np.asarray, variables["params"])
  scores = np.tanh((q @ p["w_q"])[:, None, :] + k @ p["w_k"] + p["b_k"]) @ p["v"]
  keep = np.arange(keys)[None] < lens[:, None]
  want_w = np_masked_softmax(scores, keep)
  np.testing.assert_allclose(weights, want_w, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(context, np.einsum("bk,bkd->bd", want_w, v), rtol=1e-5, atol=1e-6)
  assert np.all(np.asarray(weights)[~keep] == 0.0)
  # Many queries at once give the same rows as one query at a time.
  qs = np.stack([q, q[::-1]], axis=1)  # [batch, 2, dq]
  _, w2 = module.apply(variables, qs, k, v, lens)
  np.testing.assert_allclose(w2[:, 0], weights, rtol=1e-5, atol=1e-6)


def test_masked_softmax_gradient_is_zero_on_padding(rng):
  scores = jnp.asarray(rng.normal(size=(2, 5)).astype(np.float32))
  lens = jnp.array([3, 5])
  g = jax.grad(lambda s: jnp.sum(attention.masked_softmax(s, lens) * jnp.arange(5.0)))(scores)
  assert np.all(np.asarray(g)[0, 3:] == 0.0) and np.isfinite(np.asarray(g)).all()
