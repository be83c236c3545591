"""Attention primitives: plain functions first, modules only hold parameters.

Shapes: queries `[batch, (queries,) d]`, keys/values `[batch, keys, d]`,
scores and weights `[batch, (heads,) (queries,) keys]`. Lengths are int32.
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from seq2seq_jax.models.dropout import Dropout

Array = jax.Array


def length_mask(lengths: Array, size: int) -> Array:
  """Boolean [*lengths.shape, size]: True at positions < length."""
  return jnp.arange(size) < lengths[..., None]


def _valid_lens_mask(valid_lens: Array, scores_shape) -> Array:
  """Turns per-row or per-query lengths into a mask broadcastable to scores.

  valid_lens [batch] applies to every query (and head) of a row;
  valid_lens [batch, queries] gives each query its own length and needs
  scores [batch, queries, keys] or [batch, heads, queries, keys].
  """
  keys = scores_shape[-1]
  mask = length_mask(valid_lens, keys)
  if valid_lens.ndim == 1:
    return mask.reshape((mask.shape[0],) + (1,) * (len(scores_shape) - 2) + (keys,))
  if valid_lens.ndim == 2 and len(scores_shape) == 4:
    return mask[:, None]  # the same per-query lengths for every head
  if valid_lens.ndim == len(scores_shape) - 1:
    return mask
  raise ValueError(f"valid_lens of shape {valid_lens.shape} does not fit scores {scores_shape}")


def _keep_mask(scores: Array, valid_lens: Optional[Array], mask: Optional[Array]) -> Array:
  keep = jnp.ones(scores.shape, bool)
  if valid_lens is not None:
    keep = keep & _valid_lens_mask(valid_lens, scores.shape)
  if mask is not None:
    keep = keep & mask
  return keep


def masked_softmax(scores: Array, valid_lens: Optional[Array] = None,
                   mask: Optional[Array] = None) -> Array:
  """Softmax over the last axis that gives masked keys exactly zero weight.

  Args:
    scores: [..., keys].
    valid_lens: optional int lengths, [batch] or [batch, queries]; keys at
      index >= length are masked.
    mask: optional boolean array broadcastable to `scores` (True = keep), for
      masks that are not prefixes (e.g. causal); combined with `valid_lens`.
  Returns:
    Weights shaped like `scores`: each row sums to 1 over its unmasked keys,
    is exactly 0 on masked ones, and is all zeros when every key is masked
    (a zero-length filler row), never NaN.
  """
  keep = _keep_mask(scores, valid_lens, mask)
  big_negative = jnp.finfo(scores.dtype).min
  weights = jax.nn.softmax(jnp.where(keep, scores, big_negative), axis=-1)
  return jnp.where(keep, weights, 0.0)


def additive_scores(query_proj: Array, key_proj: Array, v: Array) -> Array:
  """Bahdanau scores `v . tanh(W_q q + W_k k)` from projected inputs.

  Args:
    query_proj: [batch, attn] (one query) or [batch, queries, attn].
    key_proj: [batch, keys, attn], projected once per source sequence.
    v: [attn].
  Returns:
    [batch, keys] or [batch, queries, keys].

  The [batch, (queries,) keys, attn] tanh layer is recomputed in the backward
  pass instead of stored (`jax.checkpoint`): inside a decoder scan, storing it
  means writing and reading back one such array per target step, which costs
  more than the tanh itself (on CPU it was a fifth of a train step).
  """
  return _additive_scores(query_proj, key_proj, v)


@jax.checkpoint
def _additive_scores(query_proj, key_proj, v):
  if query_proj.ndim == 2:
    return jnp.tanh(query_proj[:, None, :] + key_proj) @ v
  return jnp.tanh(query_proj[:, :, None, :] + key_proj[:, None, :, :]) @ v


def attend(weights: Array, values: Array) -> Array:
  """Weighted sum of values: [batch, (q,) keys] x [batch, keys, d] -> [batch, (q,) d]."""
  if weights.ndim == 2:
    return jnp.einsum("bk,bkd->bd", weights, values)
  return jnp.einsum("b...k,bkd->b...d", weights, values)


# -- normalizers: scores -> weights ------------------------------------------

NORMALIZERS = ("softmax", "sparsemax", "topk")


def masked_sparsemax(scores: Array, valid_lens: Optional[Array] = None,
                     mask: Optional[Array] = None) -> Array:
  """Sparsemax (Martins & Astudillo 2016) over the last axis, with masking.

  The Euclidean projection of the scores onto the probability simplex:
  `p = max(z - tau, 0)` with `tau` chosen so `p` sums to 1. Low-scoring valid
  keys get exactly zero weight; masked keys always do; rows with no valid key
  are all zeros. Same arguments as `masked_softmax`.
  """
  keep = _keep_mask(scores, valid_lens, mask)
  # Masked keys are filled with a value below any possible threshold
  # (tau > max(z) - 1), finite so that no inf reaches the gradient.
  top = jnp.max(jnp.where(keep, scores, jnp.finfo(scores.dtype).min), axis=-1, keepdims=True)
  top = jax.lax.stop_gradient(jnp.where(jnp.any(keep, -1, keepdims=True), top, 0.0))
  z = jnp.where(keep, scores, top - 2.0)
  z_sorted = -jnp.sort(-z, axis=-1)
  ranks = jnp.arange(1, z.shape[-1] + 1, dtype=z.dtype)
  cumsum = jnp.cumsum(z_sorted, axis=-1)
  in_support = 1.0 + ranks * z_sorted > cumsum
  support = jnp.sum(in_support, axis=-1, keepdims=True)
  tau_sum = jnp.take_along_axis(cumsum, jnp.maximum(support - 1, 0).astype(jnp.int32), axis=-1)
  tau = (tau_sum - 1.0) / jnp.maximum(support, 1).astype(z.dtype)
  return jnp.where(keep, jnp.maximum(z - tau, 0.0), 0.0)


def masked_topk(scores: Array, k: int, valid_lens: Optional[Array] = None,
                mask: Optional[Array] = None) -> Array:
  """Hard attention: only the k best-scoring valid keys get weight.

  Forward: the softmax renormalized over the top k valid keys (k=1 is argmax
  attention, a one-hot row); every other key gets exactly zero. Ties are broken
  toward the earlier key. Backward: the straight-through estimator, i.e. the
  gradient of the full masked softmax, so keys outside the top k still
  receive a learning signal and can enter it.
  """
  keep = _keep_mask(scores, valid_lens, mask)
  soft = masked_softmax(scores, mask=keep)
  # Each key's rank among the valid ones, best first; a stable sort breaks
  # ties toward the earlier key, so never more than k keys are selected.
  masked = jnp.where(keep, scores, -jnp.inf)
  rank = jnp.argsort(jnp.argsort(-masked, axis=-1, stable=True), axis=-1, stable=True)
  selected = keep & (rank < k)
  hard = masked_softmax(jax.lax.stop_gradient(scores), mask=selected)
  return hard + (soft - jax.lax.stop_gradient(soft))


def normalize(kind: str, scores: Array, valid_lens: Optional[Array] = None,
              mask: Optional[Array] = None, topk: int = 1) -> Array:
  """Scores -> attention weights with the normalizer named `kind`."""
  if kind == "softmax":
    return masked_softmax(scores, valid_lens, mask)
  if kind == "sparsemax":
    return masked_sparsemax(scores, valid_lens, mask)
  if kind == "topk":
    return masked_topk(scores, topk, valid_lens, mask)
  raise ValueError(f"normalizer must be one of {NORMALIZERS}, got {kind!r}")


# -- score functions: (query, keys) -> scores --------------------------------

SCORES = ("additive", "dot", "scaled_dot", "general", "concat")


def dot_scores(query: Array, keys: Array) -> Array:
  """Luong's dot: q . k. query [batch, (q,) d], keys [batch, k, d]."""
  if query.ndim == 2:
    return jnp.einsum("bd,bkd->bk", query, keys)
  return jnp.einsum("bqd,bkd->bqk", query, keys)


def scaled_dot_scores(query: Array, keys: Array) -> Array:
  """q . k / sqrt(d) (Vaswani et al. 2017): keeps the softmax out of saturation
  as d grows."""
  return dot_scores(query, keys) / jnp.sqrt(jnp.asarray(keys.shape[-1], query.dtype))


def general_scores(query: Array, w: Array, keys: Array) -> Array:
  """Luong's general (bilinear): q . W k, with W [d_q, d_k]."""
  return dot_scores(query, keys @ w.T)


def concat_scores(query: Array, keys: Array, w: Array, b: Array, v: Array) -> Array:
  """Luong's concat: v . tanh(W [q; k] + b), with W [d_q + d_k, attn].

  Written literally (one concatenated input per query-key pair) as a
  reference; `Scorer` computes the same thing with W split into its query
  and key halves, so the key half is applied once per sequence.
  """
  q = query if query.ndim == 3 else query[:, None, :]
  pairs = jnp.concatenate(
      [jnp.broadcast_to(q[:, :, None, :], q.shape[:2] + keys.shape[1:2] + q.shape[-1:]),
       jnp.broadcast_to(keys[:, None, :, :], q.shape[:2] + keys.shape[1:])], axis=-1)
  scores = jnp.tanh(pairs @ w + b) @ v
  return scores if query.ndim == 3 else scores[:, 0]


class Scorer(nn.Module):
  """Holds the weights of one score function and splits its work in two:

  * `project_keys(keys)`: everything that depends on the keys only, run once
    per source sequence (hoisted out of a decoder's scan);
  * `params()` + `score_projected(kind, params, query, projected_keys)`: the
    per-query part, a pure function that can run inside `lax.scan`.

  Weights per score: additive: w_q [d_q, A], w_k [d_k, A], b_k [A], v [A];
  concat: w [d_q + d_k, A], b [A], v [A] (the same family as additive: Luong's
  name, with the bias on the joint layer); general: w [d_q, d_k];
  dot and scaled_dot: none (they need d_q == d_k).
  """
  kind: str
  query_features: int
  key_features: int
  features: int = 128  # A, the tanh layer of additive/concat

  def setup(self):
    init = nn.initializers.lecun_normal()
    a, dq, dk = self.features, self.query_features, self.key_features
    v_init = nn.initializers.normal(stddev=a ** -0.5)
    if self.kind == "additive":
      self.w_q = self.param("w_q", init, (dq, a))
      self.w_k = self.param("w_k", init, (dk, a))
      self.b_k = self.param("b_k", nn.initializers.zeros, (a,))
      self.v = self.param("v", v_init, (a,))
    elif self.kind == "concat":
      self.w = self.param("w", init, (dq + dk, a))
      self.b = self.param("b", nn.initializers.zeros, (a,))
      self.v = self.param("v", v_init, (a,))
    elif self.kind == "general":
      self.w = self.param("w", init, (dq, dk))
    elif self.kind in ("dot", "scaled_dot"):
      if dq != dk:
        raise ValueError(f"{self.kind} attention needs query and key sizes to match, "
                         f"got {dq} and {dk}")
    else:
      raise ValueError(f"score must be one of {SCORES}, got {self.kind!r}")

  def params(self) -> dict:
    """The per-query weights, as plain arrays."""
    if self.kind == "additive":
      return {"w_q": self.w_q, "v": self.v}
    if self.kind == "concat":
      return {"w_q": self.w[:self.query_features], "v": self.v}
    return {}

  def project_keys(self, keys: Array) -> Array:
    """[batch, k, d_k] -> what `score_projected` needs of the keys."""
    if self.kind == "additive":
      return keys @ self.w_k + self.b_k
    if self.kind == "concat":
      return keys @ self.w[self.query_features:] + self.b
    if self.kind == "general":
      return keys @ self.w.T  # q . W k == q . (k W^T)
    return keys

  def __call__(self, query: Array, keys: Array) -> Array:
    """Scores [batch, (q,) k] of query [batch, (q,) d_q] against keys [batch, k, d_k]."""
    return score_projected(self.kind, self.params(), query, self.project_keys(keys))


def score_projected(kind: str, params: dict, query: Array, projected_keys: Array) -> Array:
  """The per-query half of a score function (see `Scorer`)."""
  if kind in ("additive", "concat"):
    return additive_scores(query @ params["w_q"], projected_keys, params["v"])
  if kind == "scaled_dot":
    return scaled_dot_scores(query, projected_keys)
  return dot_scores(query, projected_keys)  # dot, and general on W-projected keys


class Attention(nn.Module):
  """Single-head attention with any score and normalizer, for standalone use:
  `context, weights = Attention(...)(query, keys, values, valid_lens)`."""
  score: str
  query_features: int
  key_features: int
  features: int = 128
  normalizer: str = "softmax"
  topk: int = 1

  @nn.compact
  def __call__(self, query: Array, keys: Array, values: Array,
               valid_lens: Optional[Array] = None, mask: Optional[Array] = None):
    scores = Scorer(self.score, self.query_features, self.key_features, self.features,
                    name="scorer")(query, keys)
    weights = normalize(self.normalizer, scores, valid_lens, mask, self.topk)
    return attend(weights, values), weights


HEAD_SCORES = ("scaled_dot", "dot", "additive", "general")


def multi_head_scores(kind: str, q: Array, k: Array, params: dict) -> Array:
  """Per-head scores: q [batch, q, heads, d], k [batch, k, heads, d] ->
  [batch, heads, q, k]."""
  if kind == "additive":  # v_h . tanh(q_h + k_h), the projections being W_q, W_k
    hidden = jnp.tanh(q.transpose(0, 2, 1, 3)[:, :, :, None, :]
                      + k.transpose(0, 2, 1, 3)[:, :, None, :, :])
    return jnp.einsum("bhqkd,hd->bhqk", hidden, params["v"])
  if kind == "general":  # q_h . W_h k_h
    k = jnp.einsum("bkhe,hde->bkhd", k, params["w"])
  scores = jnp.einsum("bqhd,bkhd->bhqk", q, k)
  if kind == "scaled_dot":
    scores = scores / jnp.sqrt(jnp.asarray(q.shape[-1], scores.dtype))
  return scores


class MultiHeadAttention(nn.Module):
  """Multi-head attention: project queries, keys and values into `num_heads`
  heads, score and normalize per head, attend, concatenate, project out.

  Attributes:
    num_heads: heads; `features` must be divisible by it.
    features: size of the output and of all heads together.
    score: per-head score, one of HEAD_SCORES ("scaled_dot" is Vaswani et al.).
    normalizer: "softmax", "sparsemax" or "topk" (with `topk`).
    dropout: rate on the attention weights (training only).

  `__call__` does everything; `project_kv` and `attend_projected` split it so
  a decoder can project keys/values once (encoder memory) or one step at a
  time into a cache.
  """
  num_heads: int
  features: int
  score: str = "scaled_dot"
  normalizer: str = "softmax"
  topk: int = 1
  dropout: float = 0.0

  def setup(self):
    if self.features % self.num_heads:
      raise ValueError(f"features ({self.features}) must be divisible by "
                       f"num_heads ({self.num_heads})")
    if self.score not in HEAD_SCORES:
      raise ValueError(f"score must be one of {HEAD_SCORES}, got {self.score!r}")
    head_dim = self.features // self.num_heads
    self.query = nn.DenseGeneral((self.num_heads, head_dim))
    self.key = nn.DenseGeneral((self.num_heads, head_dim))
    self.value = nn.DenseGeneral((self.num_heads, head_dim))
    self.out = nn.DenseGeneral(self.features, axis=(-2, -1))
    self.weight_dropout = Dropout(self.dropout)
    if self.score == "additive":
      self.v = self.param("v", nn.initializers.normal(head_dim ** -0.5),
                          (self.num_heads, head_dim))
    elif self.score == "general":
      self.w = self.param("w", nn.initializers.lecun_normal(batch_axis=(0,)),
                          (self.num_heads, head_dim, head_dim))

  def project_kv(self, keys: Array, values: Optional[Array] = None):
    """keys [batch, k, d_k], values [batch, k, d_v] (default: keys) ->
    projected (k, v), each [batch, k, heads, head_dim]."""
    return self.key(keys), self.value(keys if values is None else values)

  def attend_projected(self, query: Array, k: Array, v: Array,
                       valid_lens: Optional[Array] = None, mask: Optional[Array] = None,
                       train: bool = False):
    """query [batch, q, d_q] against projected k, v -> (output [batch, q,
    features], weights [batch, heads, q, k] before dropout)."""
    params = {}
    if self.score == "additive":
      params["v"] = self.v
    elif self.score == "general":
      params["w"] = self.w
    scores = multi_head_scores(self.score, self.query(query), k, params)
    weights = normalize(self.normalizer, scores, valid_lens, mask, self.topk)
    dropped = self.weight_dropout(weights, deterministic=not train)
    out = self.out(jnp.einsum("bhqk,bkhd->bqhd", dropped, v))
    return out, weights

  def __call__(self, query: Array, keys: Array, values: Optional[Array] = None,
               valid_lens: Optional[Array] = None, mask: Optional[Array] = None,
               train: bool = False):
    """query [batch, q, d_q], keys [batch, k, d_k], values [batch, k, d_v]
    (default: keys); valid_lens [batch] or [batch, q]; mask broadcastable to
    [batch, heads, q, k] (True = may attend). Returns the output
    [batch, q, features] and per-head weights [batch, heads, q, k]."""
    k, v = self.project_kv(keys, values)
    return self.attend_projected(query, k, v, valid_lens, mask, train)
