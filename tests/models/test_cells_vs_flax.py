"""Our GRU and LSTM layers against Flax's own cells (`nn.GRUCell`,
`nn.LSTMCell` run by `nn.RNN`) given the same weights: outputs, final states
and gradients over a padded batch of different lengths, in both directions.
An independent reference beside the NumPy equations of test_recurrent.py.

Weights map exactly (module docstring of models/recurrent.py; flax's
recurrent.py):
  GRU   ir, iz, in: input kernels with biases; hr, hz: recurrent kernels
        without; hn: recurrent kernel with bias, inside the reset product
        (linear-before-reset, as ours). Our r and z have two biases each
        (b_i, b_h) where Flax has one: theirs is the sum.
  LSTM  ii, if, ig, io: input kernels without bias; hi, hf, hg, ho:
        recurrent kernels with biases. Ours has one bias per gate, b_i.
Gate order is (r, z, n) and (i, f, g, o) in both.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seq2seq_jax.models import recurrent

IN, H = 3, 16  # 16: the smallest hidden size the fused GRU kernel takes
LENGTHS = np.array([7, 4, 1, 6], np.int32)  # time 7: padding after rows 1, 2, 3

FLAX_CELLS = {"gru": nn.GRUCell, "lstm": nn.LSTMCell}


def gates(w, n):
  return jnp.split(w, n, axis=-1)


def flax_params(kind: str, p: dict) -> dict:
  """Our layer's weights as the Flax cell's parameters."""
  if kind == "gru":
    (wr, wz, wn), (br, bz, bn) = gates(p["w_i"], 3), gates(p["b_i"], 3)
    (ur, uz, un), (cr, cz, cn) = gates(p["w_h"], 3), gates(p["b_h"], 3)
    return {"ir": {"kernel": wr, "bias": br + cr}, "iz": {"kernel": wz, "bias": bz + cz},
            "in": {"kernel": wn, "bias": bn}, "hr": {"kernel": ur}, "hz": {"kernel": uz},
            "hn": {"kernel": un, "bias": cn}}
  w, b, u = gates(p["w_i"], 4), gates(p["b_i"], 4), gates(p["w_h"], 4)
  out = {}
  for k, gate in enumerate("ifgo"):
    out["i" + gate] = {"kernel": w[k]}
    out["h" + gate] = {"kernel": u[k], "bias": b[k]}
  return out


def valid(lengths, steps):
  return (np.arange(steps)[None, :] < lengths[:, None])[..., None]


def flax_layer(kind, p, x, lengths, reverse):
  """(outputs, final carry) of Flax's cell over the batch; outputs zeroed on
  padding (Flax computes something there, ours gives zeros)."""
  rnn = nn.RNN(FLAX_CELLS[kind](H), return_carry=True)
  final, out = rnn.apply({"params": {"cell": flax_params(kind, p)}}, x, seq_lengths=lengths,
                         reverse=reverse, keep_order=True)
  return jnp.where(valid(lengths, x.shape[1]), out, 0.0), final


def our_layer(kind, p, x, lengths, reverse, recurrence):
  return recurrent.run_layer(kind, p, recurrent.project(p, x), lengths, reverse=reverse,
                             recurrence=recurrence)


def weighted_sum(outputs, final, rng_seed=0):
  """A scalar that depends on every output and final state with its own
  weight, so that its gradient checks each of them."""
  leaves = jax.tree.leaves((outputs, final))
  rng = np.random.default_rng(rng_seed)
  return sum(jnp.sum(leaf * rng.normal(size=leaf.shape)) for leaf in leaves)


def layer_inputs(kind, seed=0):
  """Non-trivial weights (every bias non-zero) and a padded batch whose
  padding is random, not zero: padding must not matter to either."""
  rng = np.random.default_rng(seed)
  p = recurrent.Cell(kind, IN, H).init(jax.random.key(seed))["params"]
  p = {k: jnp.asarray(v + 0.3 * rng.normal(size=v.shape), jnp.float32) for k, v in p.items()}
  x = jnp.asarray(rng.normal(size=(len(LENGTHS), 7, IN)), jnp.float32)
  return p, x


def assert_trees_close(got, want, **tol):
  got_leaves, want_leaves = jax.tree.leaves(got), jax.tree.leaves(want)
  assert len(got_leaves) == len(want_leaves) > 0
  for g, w in zip(got_leaves, want_leaves):
    np.testing.assert_allclose(g, w, **tol)


# "fused" differs from "custom_vjp" for GRU layers only (the kernel).
KIND_AND_RECURRENCE = [(kind, r) for kind in sorted(FLAX_CELLS) for r in recurrent.RECURRENCES
                       if r != "fused" or kind == "gru"]


@pytest.mark.parametrize("kind,recurrence", KIND_AND_RECURRENCE)
@pytest.mark.parametrize("reverse", [False, True])
def test_layer_equals_flax_cell(kind, reverse, recurrence):
  p, x = layer_inputs(kind)
  lengths = jnp.asarray(LENGTHS)
  out, final = our_layer(kind, p, x, lengths, reverse, recurrence)
  want_out, want_final = flax_layer(kind, p, x, lengths, reverse)
  np.testing.assert_allclose(out, want_out, rtol=1e-5, atol=1e-6)
  assert_trees_close(final, want_final, rtol=1e-5, atol=1e-6)

  # Gradients w.r.t. inputs and every weight (Flax's through the mapping).
  def ours(p, x):
    return weighted_sum(*our_layer(kind, p, x, lengths, reverse, recurrence))

  def theirs(p, x):
    return weighted_sum(*flax_layer(kind, p, x, lengths, reverse))

  got = jax.grad(ours, argnums=(0, 1))(p, x)
  want = jax.grad(theirs, argnums=(0, 1))(p, x)
  assert set(got[0]) == set(p)
  assert_trees_close(got, want, rtol=1e-5, atol=1e-5)
  assert float(jnp.abs(got[1][2, 1:]).max()) == 0.0  # row 2 has length 1: no gradient to padding


@pytest.mark.parametrize("kind,recurrence", KIND_AND_RECURRENCE)
def test_bidirectional_encoder_equals_stacked_flax_cells(kind, recurrence):
  """Two bidirectional layers: each direction is Flax's cell, the second
  layer reads the first's two directions concatenated."""
  enc = recurrent.RecurrentEncoder(kind, IN, H, num_layers=2, bidirectional=True,
                                   recurrence=recurrence)
  _, x = layer_inputs(kind, seed=1)
  lengths = jnp.asarray(LENGTHS)
  params = enc.init(jax.random.key(1), x, lengths)["params"]
  assert set(params) == {"layer0_fwd", "layer0_bwd", "layer1_fwd", "layer1_bwd"}

  def ours(params, x):
    return enc.apply({"params": params}, x, lengths)

  def theirs(params, x):
    finals = []
    for layer in range(2):
      fwd = flax_layer(kind, params[f"layer{layer}_fwd"], x, lengths, reverse=False)
      bwd = flax_layer(kind, params[f"layer{layer}_bwd"], x, lengths, reverse=True)
      x = jnp.concatenate([fwd[0], bwd[0]], axis=-1)
      finals.append((fwd[1], bwd[1]))
    return x, tuple(finals)

  assert_trees_close(ours(params, x), theirs(params, x), rtol=1e-5, atol=1e-6)
  got = jax.grad(lambda *a: weighted_sum(*ours(*a)), argnums=(0, 1))(params, x)
  want = jax.grad(lambda *a: weighted_sum(*theirs(*a)), argnums=(0, 1))(params, x)
  assert_trees_close(got, want, rtol=1e-5, atol=1e-5)
