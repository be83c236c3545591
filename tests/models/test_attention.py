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


def test_masked_softmax_gradient_is_zero_on_padding(rng):
  scores = jnp.asarray(rng.normal(size=(2, 5)).astype(np.float32))
  lens = jnp.array([3, 5])
  g = jax.grad(lambda s: jnp.sum(attention.masked_softmax(s, lens) * jnp.arange(5.0)))(scores)
  assert np.all(np.asarray(g)[0, 3:] == 0.0) and np.isfinite(np.asarray(g)).all()


def np_sparsemax(z):
  """Held & Wolfe style: sort, find the support, threshold (one row)."""
  zs = np.sort(z)[::-1]
  cs = np.cumsum(zs)
  k = np.arange(1, len(z) + 1)
  support = k[1 + k * zs > cs].max()
  tau = (cs[support - 1] - 1) / support
  return np.maximum(z - tau, 0)


def np_normalize(kind, scores, keep, k=1):
  out = np.zeros_like(scores)
  for idx in np.ndindex(scores.shape[:-1]):
    row, m = scores[idx], keep[idx]
    if not m.any():
      continue
    if kind == "softmax":
      e = np.exp(row[m] - row[m].max())
      out[idx][m] = e / e.sum()
    elif kind == "sparsemax":
      out[idx][m] = np_sparsemax(row[m])
    else:
      valid = np.flatnonzero(m)
      best = valid[np.argsort(-row[valid], kind="stable")[:k]]
      e = np.exp(row[best] - row[best].max())
      out[idx][best] = e / e.sum()
  return out


@pytest.mark.parametrize("kind,k", [("softmax", 1), ("sparsemax", 1), ("topk", 1), ("topk", 3)])
def test_normalizers_against_numpy(rng, kind, k):
  scores = (rng.normal(size=(5, 7)) * 2).astype(np.float32)
  scores[4, 1] = scores[4, 2]  # a tie
  lens = np.array([7, 4, 1, 0, 7])
  keep = np.arange(7)[None] < lens[:, None]
  got = np.asarray(attention.normalize(kind, jnp.asarray(scores), jnp.asarray(lens), topk=k))
  want = np_normalize(kind, scores, keep, k)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert np.all(got[~keep] == 0.0) and np.all(got[3] == 0.0)
  np.testing.assert_allclose(got[[0, 1, 2, 4]].sum(-1), 1.0, rtol=1e-5)
  # The same keys get exactly zero as in NumPy: for topk that is exactly k
  # keys per row (ties too, row 4), as the reference keeps k.
  np.testing.assert_array_equal((got > 0).sum(-1), (want > 0).sum(-1))


def test_sparsemax_and_topk_give_exact_zeros_to_valid_keys(rng):
  scores = jnp.asarray([[3.0, 0.1, 2.9, -1.0, 0.0]])
  sp = np.asarray(attention.masked_sparsemax(scores, jnp.array([5])))
  assert sp[0, 3] == 0.0 and sp[0, 1] == 0.0 and sp[0, 0] > sp[0, 2] > 0.0
  hard = np.asarray(attention.masked_topk(scores, 1, jnp.array([5])))
  np.testing.assert_array_equal(hard, [[1.0, 0, 0, 0, 0]])
  # A large score shift leaves sparsemax unchanged (it is shift-invariant).
  np.testing.assert_allclose(attention.masked_sparsemax(scores + 100.0, jnp.array([5])), sp,
                             atol=1e-5)


@pytest.mark.parametrize("kind", attention.NORMALIZERS)
def test_normalizer_gradients_are_finite(rng, kind):
  scores = jnp.asarray(rng.normal(size=(3, 6)).astype(np.float32))
  lens = jnp.array([6, 2, 0])
  target = jnp.asarray(rng.normal(size=(3, 6)).astype(np.float32))
  g = jax.grad(lambda s: jnp.sum(attention.normalize(kind, s, lens, topk=2) * target))(scores)
  g = np.asarray(g)
  assert np.isfinite(g).all()
  assert np.all(g[1, 2:] == 0.0) and np.all(g[2] == 0.0)  # nothing flows to padding
  assert np.abs(g[0]).sum() > 0


def test_topk_uses_the_straight_through_softmax_gradient(rng):
  scores = jnp.asarray(rng.normal(size=(2, 5)).astype(np.float32))
  lens = jnp.array([5, 3])
  target = jnp.asarray(rng.normal(size=(2, 5)).astype(np.float32))
  g_hard = jax.grad(lambda s: jnp.sum(attention.masked_topk(s, 1, lens) * target))(scores)
  g_soft = jax.grad(lambda s: jnp.sum(attention.masked_softmax(s, lens) * target))(scores)
  np.testing.assert_allclose(g_hard, g_soft, rtol=1e-6)


def np_scores(kind, p, q, k):
  if kind == "dot":
    return np.einsum("bd,bkd->bk", q, k)
  if kind == "scaled_dot":
    return np.einsum("bd,bkd->bk", q, k) / np.sqrt(k.shape[-1])
  if kind == "general":
    return np.einsum("bd,de,bke->bk", q, p["w"], k)
  if kind == "additive":
    return np.tanh((q @ p["w_q"])[:, None] + k @ p["w_k"] + p["b_k"]) @ p["v"]
  # concat: v . tanh(W [q; k] + b), literally
  pairs = np.concatenate([np.repeat(q[:, None], k.shape[1], 1), k], -1)
  return np.tanh(pairs @ p["w"] + p["b"]) @ p["v"]


@pytest.mark.parametrize("score", attention.SCORES)
@pytest.mark.parametrize("normalizer", attention.NORMALIZERS)
def test_attention_module_against_numpy(rng, score, normalizer):
  batch, keys, dq, a = 3, 5, 4, 6
  dk = dq if score in ("dot", "scaled_dot") else 6
  module = attention.Attention(score, dq, dk, a, normalizer=normalizer, topk=2)
  q = rng.normal(size=(batch, dq)).astype(np.float32)
  k = rng.normal(size=(batch, keys, dk)).astype(np.float32)
  v = rng.normal(size=(batch, keys, 3)).astype(np.float32)
  lens = np.array([5, 2, 1])
  variables = module.init(jax.random.key(0), q, k, v, lens)
  context, weights = module.apply(variables, q, k, v, lens)
  p = jax.tree.map(np.asarray, variables.get("params", {}).get("scorer", {}))
  keep = np.arange(keys)[None] < lens[:, None]
  want_w = np_normalize(normalizer, np_scores(score, p, q, k), keep, 2)
  np.testing.assert_allclose(weights, want_w, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(context, np.einsum("bk,bkd->bd", want_w, v), rtol=1e-4, atol=1e-5)
  assert np.all(np.asarray(weights)[~keep] == 0.0)
  # Many queries at once: the same rows as one query at a time.
  _, w2 = module.apply(variables, np.stack([q, q[::-1]], 1), k, v, lens)
  np.testing.assert_allclose(w2[:, 0], weights, rtol=1e-5, atol=1e-6)


def test_concat_reference_equals_split_scorer(rng):
  scorer = attention.Scorer("concat", 4, 6, 5)
  q = rng.normal(size=(2, 4)).astype(np.float32)
  k = rng.normal(size=(2, 3, 6)).astype(np.float32)
  params = scorer.init(jax.random.key(1), q, k)
  p = params["params"]
  np.testing.assert_allclose(scorer.apply(params, q, k),
                             attention.concat_scores(q, k, p["w"], p["b"], p["v"]), rtol=1e-5)


@pytest.mark.parametrize("score", attention.HEAD_SCORES)
def test_multi_head_attention_against_numpy(rng, score):
  batch, nq, nk, d, heads = 2, 3, 4, 8, 2
  mha = attention.MultiHeadAttention(heads, d, score=score)
  x = rng.normal(size=(batch, nq, 5)).astype(np.float32)
  mem = rng.normal(size=(batch, nk, 6)).astype(np.float32)
  lens = np.array([4, 2])
  variables = mha.init(jax.random.key(0), x, mem, valid_lens=lens)
  out, weights = mha.apply(variables, x, mem, valid_lens=lens)
  p = jax.tree.map(np.asarray, variables["params"])
  proj = lambda name, t: np.einsum("bti,ihd->bthd", t, p[name]["kernel"]) + p[name]["bias"]
  q, k, v = proj("query", x), proj("key", mem), proj("value", mem)
  keep = np.broadcast_to(np.arange(nk)[None, None, None] < lens[:, None, None, None],
                         (batch, heads, nq, nk))
  scores = np.zeros((batch, heads, nq, nk))
  for b in range(batch):
    for h in range(heads):
      for i in range(nq):
        for j in range(nk):
          qi, kj = q[b, i, h], k[b, j, h]
          if score == "additive":
            scores[b, h, i, j] = np.tanh(qi + kj) @ p["v"][h]
          elif score == "general":
            scores[b, h, i, j] = qi @ p["w"][h] @ kj
          else:
            scores[b, h, i, j] = qi @ kj / (np.sqrt(d // heads) if score == "scaled_dot" else 1)
  want_w = np_normalize("softmax", scores, keep)
  np.testing.assert_allclose(weights, want_w, rtol=1e-4, atol=1e-5)
  heads_out = np.einsum("bhqk,bkhd->bqhd", want_w, v)
  want = np.einsum("bqhd,hdo->bqo", heads_out, p["out"]["kernel"]) + p["out"]["bias"]
  np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)


def test_multi_head_attention_causal_mask_and_dropout(rng):
  mha = attention.MultiHeadAttention(2, 8, dropout=0.5)
  x = jnp.asarray(rng.normal(size=(1, 4, 8)).astype(np.float32))
  causal = jnp.tril(jnp.ones((4, 4), bool))
  variables = mha.init(jax.random.key(0), x, x, mask=causal)
  out, w = mha.apply(variables, x, x, mask=causal)
  assert np.all(np.asarray(w)[..., ~np.asarray(causal)] == 0.0)
  # Perturbing a later position changes nothing before it.
  x2 = x.at[:, 3].add(5.0)
  out2, _ = mha.apply(variables, x2, x2, mask=causal)
  np.testing.assert_allclose(out2[:, :3], out[:, :3], rtol=1e-5, atol=1e-6)
  a, _ = mha.apply(variables, x, x, mask=causal, train=True, rngs={"dropout": jax.random.key(1)})
  assert not np.allclose(a, out)
