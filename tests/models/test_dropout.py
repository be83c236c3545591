"""16-bit dropout: the drop rate and the scaling, checked by counting."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seq2seq_jax.models import dropout as dropout_lib


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5])
@pytest.mark.parametrize("shape", [(1000, 1000), (999, 1001)])  # even and odd sizes
def test_drops_at_the_rate_and_keeps_the_mean(rate, shape):
  x = jnp.ones(shape, jnp.float32)
  y = np.asarray(dropout_lib.dropout(jax.random.key(3), rate, x))
  dropped = np.mean(y == 0.0)
  # 1e6 Bernoulli draws: a standard error under 5e-4.
  assert abs(dropped - rate) < 3e-3
  assert abs(dropout_lib.keep_probability(rate) - (1.0 - rate)) <= 2.0 ** -17
  kept = y[y != 0.0]
  np.testing.assert_allclose(kept, 1.0 / dropout_lib.keep_probability(rate), rtol=1e-6)
  assert abs(float(np.mean(y)) - 1.0) < 6e-3  # unbiased


def test_masks_are_a_function_of_the_key_and_independent_across_keys():
  a = dropout_lib.keep_mask(jax.random.key(0), 0.5, (64, 64))
  b = dropout_lib.keep_mask(jax.random.key(0), 0.5, (64, 64))
  c = dropout_lib.keep_mask(jax.random.key(1), 0.5, (64, 64))
  assert np.array_equal(a, b)
  agree = float(np.mean(np.asarray(a) == np.asarray(c)))
  assert 0.45 < agree < 0.55  # unrelated masks agree half the time


def test_module_follows_flax_dropout_interface():
  x = jnp.arange(1.0, 65.0).reshape(8, 8)
  layer = dropout_lib.Dropout(0.5)
  assert np.array_equal(layer.apply({}, x, deterministic=True), x)
  y = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
  y = np.asarray(y)
  assert 0 < np.sum(y == 0) < 64
  np.testing.assert_allclose(y[y != 0], 2.0 * np.asarray(x)[y != 0])
  with pytest.raises(flax.errors.InvalidRngError):
    layer.apply({}, x, deterministic=False)  # no "dropout" RNG given
  assert np.array_equal(dropout_lib.Dropout(0.0).apply({}, x, deterministic=False), x)
