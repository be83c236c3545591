"""Attention primitives: plain functions first, modules only hold parameters.

Shapes: queries `[batch, (queries,) d]`, keys/values `[batch, keys, d]`,
scores and weights `[batch, (heads,) (queries,) keys]`. Lengths are int32.
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

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
  keep = jnp.ones(scores.shape, bool)
  if valid_lens is not None:
    keep = keep & _valid_lens_mask(valid_lens, scores.shape)
  if mask is not None:
    keep = keep & mask
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
  """
  if query_proj.ndim == 2:
    return jnp.tanh(query_proj[:, None, :] + key_proj) @ v
  return jnp.tanh(query_proj[:, :, None, :] + key_proj[:, None, :, :]) @ v


def attend(weights: Array, values: Array) -> Array:
  """Weighted sum of values: [batch, (q,) keys] x [batch, keys, d] -> [batch, (q,) d]."""
  if weights.ndim == 2:
    return jnp.einsum("bk,bkd->bd", weights, values)
  return jnp.einsum("b...k,bkd->b...d", weights, values)


class AdditiveAttention(nn.Module):
  """Holds Bahdanau attention's weights: w_q [query_features, features],
  w_k [key_features, features], b_k [features] and v [features].

  Calling it runs the whole thing, for a standalone user. RNN decoders instead
  call `project_keys` once per source sequence and `params()` to score inside
  their scan, so the keys are not re-projected at every decoder step.
  """
  features: int
  query_features: int
  key_features: int

  def setup(self):
    init = nn.initializers.lecun_normal()
    self.w_q = self.param("w_q", init, (self.query_features, self.features))
    self.w_k = self.param("w_k", init, (self.key_features, self.features))
    self.b_k = self.param("b_k", nn.initializers.zeros, (self.features,))
    self.v = self.param("v", nn.initializers.normal(stddev=self.features ** -0.5),
                        (self.features,))

  def params(self) -> dict:
    return {"w_q": self.w_q, "v": self.v}

  def project_keys(self, keys: Array) -> Array:
    """[batch, keys, key_features] -> [batch, keys, features]."""
    return keys @ self.w_k + self.b_k

  def __call__(self, query: Array, keys: Array, values: Array,
               valid_lens: Optional[Array] = None):
    """query [batch, (q,) query_features], keys [batch, k, key_features],
    values [batch, k, d] -> (context [batch, (q,) d], weights [batch, (q,) k])."""
    scores = additive_scores(query @ self.w_q, self.project_keys(keys), self.v)
    weights = masked_softmax(scores, valid_lens)
    return attend(weights, values), weights
