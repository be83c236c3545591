"""The compiled Bahdanau decoder loop (`decoder_cpu`, cpu/bahdanau_decoder.cc):
a model with `recurrence="fused"` against the same model with "scan" (the
plain loops, differentiated by JAX): logits, attention weights and every
parameter's gradient, with one, two and three decoder layers, padded and
empty source and target rows, dropout on the embeddings and between layers (the same
masks), and under jax.vmap, with the instruction set in use and one case on
AVX2; the kernel is in programs for the CPU and in none for GPU or TPU;
models it does not take run the scan."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seq2seq_jax.models import cpu_kernels
from seq2seq_jax.models.rnn_seq2seq import RNNSeq2Seq

needs_kernel = pytest.mark.skipif(not cpu_kernels.available(),
                                  reason="the kernels need x86-64 with AVX2 and FMA")
VOCAB = 9


def _model(recurrence="fused", **kw):
  base = dict(src_vocab_size=11, tgt_vocab_size=VOCAB, embed_dim=16, encoder_hidden=16,
              encoder_layers=1, bidirectional=True, decoder="bahdanau", encoder_cell="gru",
              decoder_cell="gru", decoder_hidden=32, decoder_layers=2, attention_dim=16,
              dropout=0.0, recurrence=recurrence)
  return RNNSeq2Seq(**{**base, **kw})


def _batch(rows, src_time, tgt_time, seed=0):
  """Sources and targets of random lengths, padded with 0 (PAD); the first
  row full, the last an empty filler row (as the batcher fills a batch)."""
  rng = np.random.default_rng(seed)
  src = jnp.asarray(rng.integers(4, 11, (rows, src_time)), jnp.int32)
  lengths = rng.integers(1, src_time + 1, rows)
  lengths[0], lengths[-1] = src_time, 0
  tgt = rng.integers(4, VOCAB, (rows, tgt_time))
  tgt_len = rng.integers(1, tgt_time + 1, rows)
  tgt_len[0], tgt_len[-1] = tgt_time, 0
  tgt[np.arange(tgt_time) >= tgt_len[:, None]] = 0
  return src, jnp.asarray(lengths, jnp.int32), jnp.asarray(tgt, jnp.int32)


def _loss(model, src, src_len, tgt):
  """A scalar of every logit and attention weight, each with its own weight,
  so its gradient checks all of them; (loss, (logits, attention))."""
  def loss(params):
    logits, aux = model.apply({"params": params}, src, src_len, tgt, train=True,
                              rngs={"dropout": jax.random.key(7)},
                              tgt_len=jnp.sum(tgt != 0, axis=1))  # as the batcher's
    attention = aux["attention"]
    return (jnp.sum(jax.nn.log_softmax(logits) * jnp.cos(jnp.arange(float(VOCAB))))
            + jnp.sum(attention * jnp.sin(jnp.arange(float(attention.shape[-1]))))), (
                logits, attention)
  return loss


def _assert_close(got, want, rtol):
  leaves_got, leaves_want = jax.tree.leaves(got), jax.tree.leaves(want)
  assert len(leaves_got) == len(leaves_want) > 0
  for g, w in zip(leaves_got, leaves_want):
    scale = float(jnp.max(jnp.abs(w)))
    np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * scale)


THREE_LAYERS = dict(decoder_layers=3, decoder_hidden=16, attention_dim=48, dropout=0.3)


@needs_kernel
@pytest.mark.parametrize("kw,rows,isa", [
    (dict(), 5, None),  # None: the instruction set in use
    (dict(decoder_layers=1, dropout=0.2), 13, None),  # embedding dropout; 13 rows: odd thread split
    (THREE_LAYERS, 7, None),
    pytest.param(THREE_LAYERS, 7, "avx2", marks=pytest.mark.skipif(
        "avx2" not in cpu_kernels.supported(), reason="needs AVX2")),
], ids=["2-layers", "1-layer-dropout", "3-layers-dropout-between", "3-layers-avx2"])
def test_fused_decoder_equals_the_scan_in_values_and_gradients(kw, rows, isa):
  src, src_len, tgt = _batch(rows, 9, 6)
  ref, fused = _model("scan", **kw), _model("fused", **kw)
  params = ref.init(jax.random.key(0), src, src_len, tgt)["params"]
  want = jax.jit(jax.grad(_loss(ref, src, src_len, tgt), has_aux=True))(params)
  isa = isa or cpu_kernels.isa()
  with cpu_kernels.forced_isa(isa):
    program = jax.jit(jax.grad(_loss(fused, src, src_len, tgt), has_aux=True)).lower(params)
    assert f"bahdanau_decoder_backward_{isa}" in program.as_text()
    got = program.compile()(params)
  _assert_close(got[1], want[1], rtol=1e-5)  # logits and attention weights
  _assert_close(got[0], want[0], rtol=1e-4)  # every parameter's gradient
  assert all(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(got[0]))


@needs_kernel
def test_fused_decoder_under_vmap_equals_the_scan():
  """Stacked parameters (as an ensemble's): the kernel runs each problem."""
  src, src_len, tgt = _batch(4, 5, 3)
  ref, fused = _model("scan"), _model("fused")
  params = jax.vmap(lambda k: ref.init(k, src, src_len, tgt)["params"])(
      jax.random.split(jax.random.key(1), 2))

  def grads(model):
    return jax.vmap(jax.grad(_loss(model, src, src_len, tgt), has_aux=True))(params)
  _assert_close(jax.jit(lambda: grads(fused))(), jax.jit(lambda: grads(ref))(), rtol=1e-4)


def _program(model, platforms=None):
  src, src_len, tgt = _batch(3, 4, 2)
  params = model.init(jax.random.key(0), src, src_len, tgt)["params"]
  fn = jax.jit(jax.grad(lambda p: _loss(model, src, src_len, tgt)(p)[0]))
  if platforms is None:
    return fn.lower(params).as_text()
  return jax.export.export(fn, platforms=platforms)(params).mlir_module()


@needs_kernel
def test_cpu_programs_call_the_kernel_and_gpu_and_tpu_programs_do_not():
  cpu = _program(_model("fused"))
  isa = cpu_kernels.isa()
  assert f"bahdanau_decoder_forward_{isa}" in cpu and f"bahdanau_decoder_backward_{isa}" in cpu
  for platform in ("cuda", "rocm", "tpu"):
    assert "bahdanau_decoder_" not in _program(_model("fused"), [platform])


@pytest.mark.parametrize("kw", [
    dict(recurrence="custom_vjp"),
    dict(decoder="luong", attention_score="general"),
    dict(attention_normalizer="sparsemax"),
    dict(decoder_cell="lstm"),
    dict(decoder_hidden=20),  # not a multiple of 16
    dict(embed_dim=6),  # nor this
])
def test_models_the_kernel_does_not_take_run_the_scan(kw):
  kw = {"recurrence": "fused", **kw}
  assert "bahdanau_decoder_" not in _program(_model(**kw))
