"""The faster recurrences (`recurrence="custom_vjp"`, the hand-written
backward pass, and "fused", which runs GRU layers on the compiled CPU kernel)
against JAX's autodiff of the plain scan (`recurrence="scan"`): the same
values, and the same gradients to float32 tolerance, for every cell,
direction, padding and initial carry, and for whole models that use them.
Hidden sizes are multiples of 16, so that "fused" runs the kernel."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seq2seq_jax.models import recurrent
from seq2seq_jax.models.rnn_seq2seq import RNNSeq2Seq


def _layer_case(kind: str, seed: int = 0):
  batch, steps, inputs, hidden = 5, 7, 3, 16
  gates = recurrent.num_gates(kind)
  k = jax.random.split(jax.random.key(seed), 6)
  params = {"w_i": jax.random.normal(k[0], (inputs, gates * hidden)),
            "b_i": jax.random.normal(k[1], (gates * hidden,)),
            "w_h": 0.5 * jax.random.normal(k[2], (hidden, gates * hidden))}
  if kind == "gru":
    params["b_h"] = jax.random.normal(k[3], (gates * hidden,))
  x = jax.random.normal(k[4], (batch, steps, inputs))
  h0 = jax.random.normal(k[5], (batch, hidden))
  carry = (0.3 * h0, h0) if kind == "lstm" else h0
  # Full length, short, empty (a filler row) and in between.
  lengths = jnp.array([steps, 3, 0, 5, 1], jnp.int32)
  return params, x, carry, lengths


def _layer_loss(kind, reverse, recurrence):
  def loss(params, x, carry, lengths):
    out, final = recurrent.run_layer(kind, params, recurrent.project(params, x), lengths, carry,
                                     reverse=reverse, recurrence=recurrence)
    # Weights that differ per position, so every output's gradient differs.
    w = jnp.cos(jnp.arange(out.size, dtype=jnp.float32).reshape(out.shape))
    return jnp.sum(out * w) + sum(jnp.sum(jnp.sin(f)) for f in jax.tree.leaves(final))
  return loss


def _assert_trees_close(a, b, rtol=1e-5, atol=1e-5):
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b) > 0
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


FAST = ("custom_vjp", "fused")
# "fused" differs from "custom_vjp" for GRU layers only.
KIND_AND_FAST = [(kind, "custom_vjp") for kind in recurrent.CELLS] + [("gru", "fused")]


@pytest.mark.parametrize("kind", recurrent.CELLS)
@pytest.mark.parametrize("reverse", [False, True])
def test_layer_values_and_gradients_equal_autodiff_of_the_scan(kind, reverse):
  """custom_vjp; "fused" layers are checked in tests/models/test_gru_cpu.py."""
  params, x, carry, lengths = _layer_case(kind)
  ref = _layer_loss(kind, reverse, "scan")
  fast = _layer_loss(kind, reverse, "custom_vjp")
  out_ref = recurrent.run_layer(kind, params, recurrent.project(params, x), lengths, carry,
                                reverse=reverse, recurrence="scan")
  out_fast = recurrent.run_layer(kind, params, recurrent.project(params, x), lengths, carry,
                                 reverse=reverse, recurrence="custom_vjp")
  _assert_trees_close(out_ref, out_fast, rtol=1e-6, atol=1e-6)
  grads_ref = jax.grad(ref, argnums=(0, 1, 2))(params, x, carry, lengths)
  grads_fast = jax.grad(fast, argnums=(0, 1, 2))(params, x, carry, lengths)
  _assert_trees_close(grads_ref, grads_fast)
  # The gradient reaches every weight (nothing silently zero).
  assert all(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(grads_fast[0]))


@pytest.mark.parametrize("recurrence", FAST)
def test_padding_gets_no_gradient_and_filler_rows_pass_their_carry_through(recurrence):
  params, x, carry, lengths = _layer_case("gru", seed=3)
  grads = jax.grad(_layer_loss("gru", False, recurrence), argnums=(1, 2))(
      params, x, carry, lengths)
  dx, dcarry = grads
  steps = np.arange(x.shape[1])[None, :]
  padding = steps >= np.asarray(lengths)[:, None]
  assert np.all(np.asarray(dx)[padding] == 0.0)
  assert np.any(np.asarray(dx)[~padding] != 0.0)
  # The empty row's final state is its initial carry: d sin(h0) = cos(h0).
  np.testing.assert_allclose(np.asarray(dcarry)[2], np.cos(np.asarray(carry)[2]), rtol=1e-6)


def _model(recurrence, **kw):
  base = dict(src_vocab_size=11, tgt_vocab_size=9, embed_dim=6, encoder_hidden=16,
              encoder_layers=2, decoder_hidden=32, decoder_layers=2, attention_dim=4,
              dropout=0.2, recurrence=recurrence)
  base.update(kw)
  return RNNSeq2Seq(**base)


@pytest.mark.parametrize("kw,recurrence", [
    (dict(decoder="plain", encoder_cell="gru", decoder_cell="gru"), "custom_vjp"),
    (dict(decoder="plain", encoder_cell="gru", decoder_cell="gru"), "fused"),
    (dict(decoder="bahdanau", encoder_cell="gru", decoder_cell="gru", bidirectional=True), "fused"),
    (dict(decoder="plain", encoder_cell="lstm", decoder_cell="lstm", bidirectional=True),
     "custom_vjp"),
    (dict(decoder="bahdanau", encoder_cell="rnn", decoder_cell="gru", bidirectional=True),
     "custom_vjp"),
], ids=["gru-plain", "gru-plain-fused", "gru-bahdanau-bi-fused", "lstm-plain-bi",
        "rnn-bahdanau-bi"])
def test_models_train_the_same_with_either_recurrence(kw, recurrence):
  """Logits and parameter gradients of a training pass (dropout on) agree.
  The plain decoder runs layer by layer with custom_vjp and step by step
  with scan, so this also checks that both draw the same dropout masks."""
  rng = np.random.default_rng(0)
  src = jnp.asarray(rng.integers(4, 11, (3, 6)), jnp.int32)
  src_len = jnp.array([6, 2, 4], jnp.int32)
  tgt_in = jnp.asarray(rng.integers(4, 9, (3, 5)), jnp.int32)
  ref, fast = _model("scan", **kw), _model(recurrence, **kw)
  params = ref.init(jax.random.key(0), src, src_len, tgt_in)["params"]

  def loss(model):
    def f(p):
      logits, _ = model.apply({"params": p}, src, src_len, tgt_in, train=True,
                              rngs={"dropout": jax.random.key(7)})
      return jnp.sum(jax.nn.log_softmax(logits) * jnp.cos(jnp.arange(9.0))), logits
    return jax.jit(jax.grad(f, has_aux=True))(params)

  grads_ref, logits_ref = loss(ref)
  grads_fast, logits_fast = loss(fast)
  _assert_trees_close(logits_ref, logits_fast, rtol=1e-5, atol=1e-5)
  _assert_trees_close(grads_ref, grads_fast, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind,recurrence", KIND_AND_FAST)
def test_bidirectional_layer_in_one_loop_equals_two_scans(kind, recurrence):
  """run_bidirectional with custom_vjp or fused (both directions vmapped in
  one loop or kernel call) against two plain scans: outputs, finals and every
  gradient."""
  fwd, x, _, lengths = _layer_case(kind, seed=1)
  bwd, _, _, _ = _layer_case(kind, seed=2)

  def loss(recurrence):
    def f(fwd, bwd, x):
      (out_f, fin_f), (out_b, fin_b) = recurrent.run_bidirectional(
          kind, fwd, bwd, x, lengths, recurrence=recurrence)
      w = jnp.cos(jnp.arange(out_f.size, dtype=jnp.float32).reshape(out_f.shape))
      return (jnp.sum(out_f * w) + jnp.sum(out_b * w * w)
              + sum(jnp.sum(jnp.sin(f)) for f in jax.tree.leaves((fin_f, fin_b))))
    return f

  values = [recurrent.run_bidirectional(kind, fwd, bwd, x, lengths, recurrence=r)
            for r in ("scan", recurrence)]
  _assert_trees_close(values[0], values[1], rtol=1e-6, atol=1e-6)
  grads = [jax.grad(loss(r), argnums=(0, 1, 2))(fwd, bwd, x) for r in ("scan", recurrence)]
  _assert_trees_close(grads[0], grads[1])
