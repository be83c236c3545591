"""16-bit dropout: the hash against known answers and JAX's own, the drop
rate and the scaling checked by counting."""

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


# Known-answer vectors of Threefry-2x32 with 20 rounds, from the Random123
# library's kat_vectors: (key, counter) -> output.
THREEFRY_KAT = [
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
]


@pytest.mark.parametrize("key,counter,expected", THREEFRY_KAT)
def test_threefry_matches_the_known_answers(key, counter, expected):
  words = [jnp.asarray(v, jnp.uint32) for v in (*key, *counter)]
  assert tuple(int(h) for h in dropout_lib.threefry2x32(*words)) == expected


def test_threefry_matches_jax_random_bits():
  # With jax_threefry_partitionable (the default), jax.random.bits hashes the
  # counter (0, i) for word i and returns the xor of the two halves.
  key = jax.random.key(7)
  counters = jnp.arange(5000, dtype=jnp.uint32)
  k = jax.random.key_data(key)
  with jax.threefry_partitionable(True):
    expected = np.asarray(jax.random.bits(key, (5000,), jnp.uint32))
  h0, h1 = jax.jit(dropout_lib.threefry2x32)(k[0], k[1], jnp.zeros_like(counters), counters)
  np.testing.assert_array_equal(np.asarray(h0 ^ h1), expected)


def test_raw_and_other_keys():
  raw = dropout_lib.keep_mask(jax.random.PRNGKey(5), 0.5, (33, 7))
  typed = dropout_lib.keep_mask(jax.random.wrap_key_data(jax.random.PRNGKey(5)), 0.5, (33, 7))
  np.testing.assert_array_equal(raw, typed)  # a raw uint32 key is the same key
  rbg = dropout_lib.keep_mask(jax.random.key(5, impl="rbg"), 0.5, (1001,))
  assert rbg.shape == (1001,) and 0.4 < float(np.mean(rbg)) < 0.6  # its own bits


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
