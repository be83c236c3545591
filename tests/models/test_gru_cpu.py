"""The compiled GRU layer kernel (`gru_cpu`, cpu/gru_layer.cc): built by the install, used on this
CPU with the best instruction set it has unless SEQ2SEQ_JAX_CPU_KERNELS says otherwise, equal to
autodiff of the plain scan for every instruction set this CPU runs, at sizes that exercise every
edge of its matmul blocks and thread split, the same bits for AVX-512 and AVX2, and never in a
program compiled for GPU or TPU. (tests/models/test_recurrent_vjp.py and test_cells_vs_flax.py
check layers and whole models with `recurrence="fused"` too.)"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seq2seq_jax.errors import ConfigError
from seq2seq_jax.models import cpu_kernels, recurrent

needs_kernel = pytest.mark.skipif(not cpu_kernels.available(),
                                  reason="the kernels need x86-64 with AVX2 and FMA")


def test_the_extension_is_built_and_used_when_the_cpu_can_run_it():
  from seq2seq_jax.models import _cpu_kernels  # built by the README's install command
  assert set(_cpu_kernels.handlers()) == {
      f"{kernel}_{way}_{isa}" for kernel in ("gru_layer", "bahdanau_decoder")
      for way in ("forward", "backward") for isa in cpu_kernels.ISAS}
  best = (*_cpu_kernels.isas(), None)[0]
  setting = os.environ.get(cpu_kernels.ENV) or best
  assert cpu_kernels.isa() == (None if setting == "off" else setting)


def test_the_environment_variable_picks_the_instruction_set_or_turns_the_kernels_off(monkeypatch):
  for isa in cpu_kernels.supported():
    monkeypatch.setenv(cpu_kernels.ENV, isa)
    assert cpu_kernels.isa() == isa and cpu_kernels.available()
  monkeypatch.setenv(cpu_kernels.ENV, "off")
  assert cpu_kernels.isa() is None and not cpu_kernels.available()
  cannot = [isa for isa in cpu_kernels.ISAS if isa not in cpu_kernels.supported()]
  for wrong in ("avx9", "AVX2", *cannot):
    monkeypatch.setenv(cpu_kernels.ENV, wrong)
    with pytest.raises(ConfigError, match=f"SEQ2SEQ_JAX_CPU_KERNELS='{wrong}'.*'off'"):
      cpu_kernels.available()
    with pytest.raises(ValueError, match="cannot run"), cpu_kernels.forced_isa(wrong):
      pass


def _case(steps, batch, hidden, seed):
  rng = np.random.default_rng(seed)
  p = {"w_h": rng.normal(size=(hidden, 3 * hidden)) / np.sqrt(hidden),
       "b_h": 0.3 * rng.normal(size=3 * hidden),
       "w_i": rng.normal(size=(32, 3 * hidden)) / 4, "b_i": 0.3 * rng.normal(size=3 * hidden)}
  p = {k: jnp.asarray(v, jnp.float32) for k, v in p.items()}
  x = jnp.asarray(rng.normal(size=(batch, steps, 32)), jnp.float32)
  h0 = jnp.asarray(0.5 * rng.normal(size=(batch, hidden)), jnp.float32)
  lengths = rng.integers(0, steps + 1, size=batch)
  lengths[0] = steps  # at least one full row (others may be empty)
  return p, x, h0, jnp.asarray(lengths, jnp.int32)


def _loss(recurrence, lengths, reverse, projected=True):
  """A scalar of every output and the final carry. projected: the layer gets
  x w_i + b_i (run_layer); else x itself (encode_layer: the kernel projects)."""
  def loss(p, x, h0):
    if projected:
      out, final = recurrent.run_layer("gru", p, recurrent.project(p, x), lengths, h0,
                                       reverse=reverse, recurrence=recurrence)
    else:  # from a zero carry; h0 only scales the input, to keep the signature
      out, final = recurrent.encode_layer("gru", p, x * (1.0 + h0[:, :1, None]), lengths,
                                          reverse=reverse, recurrence=recurrence)
    w = jnp.cos(jnp.arange(out.size, dtype=jnp.float32).reshape(out.shape))
    return jnp.sum(out * w) + jnp.sum(jnp.sin(final))
  return loss


@needs_kernel
@pytest.mark.parametrize("isa", cpu_kernels.supported())
@pytest.mark.parametrize("steps,batch,hidden,reverse,projected", [
    (1, 1, 16, False, True),   # one step, one row: a single thread, the narrowest panel
    (9, 13, 48, True, False),  # odd rows (6-row blocks and a remainder), one AVX-512 panel
    (6, 64, 80, False, False),  # 240 gate columns (five AVX-512 panels), backward 48 + 32
    (30, 7, 256, True, True),  # the benchmark's hidden size, long sequence
])  # projected: run_layer's input x w_i + b_i; else encode_layer's x (the kernel projects)
def test_kernel_values_and_gradients_equal_autodiff_of_the_scan(steps, batch, hidden, reverse,
                                                                projected, isa):
  p, x, h0, lengths = _case(steps, batch, hidden, seed=steps)
  args = (p, x, h0)
  want_value, want = jax.value_and_grad(_loss("scan", lengths, reverse, projected),
                                        argnums=(0, 1, 2))(*args)
  with cpu_kernels.forced_isa(isa):
    program = jax.jit(jax.value_and_grad(_loss("fused", lengths, reverse, projected),
                                         argnums=(0, 1, 2))).lower(*args)
    assert f"gru_layer_forward_{isa}" in program.as_text()
    value, got = program.compile()(*args)
  np.testing.assert_allclose(value, want_value, rtol=2e-5)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    scale = float(jnp.max(jnp.abs(w)))  # 0 for w_h after one step from a zero carry: then exact
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=2e-6 * scale)


@pytest.mark.skipif(not {"avx512", "avx2"} <= set(cpu_kernels.supported()),
                    reason="needs a CPU with AVX-512 and AVX2")
def test_avx512_and_avx2_give_the_same_bits():
  """Same operations lane by lane, sums in the same order (cpu/kernels.h)."""
  p, x, h0, lengths = _case(11, 13, 80, seed=1)

  def run(isa):
    with cpu_kernels.forced_isa(isa):
      return jax.tree.leaves(jax.jit(jax.value_and_grad(_loss("fused", lengths, True, False),
                                                        argnums=(0, 1, 2)))(p, x, h0))
  for a, b in zip(run("avx512"), run("avx2"), strict=True):
    np.testing.assert_array_equal(a, b)


def _grad_program(hidden, dtype=jnp.float32, recurrence="fused"):
  p, x, h0, lengths = _case(4, 3, hidden, seed=0)
  p, x, h0 = jax.tree.map(lambda a: a.astype(dtype), (p, x, h0))
  return jax.jit(jax.grad(_loss(recurrence, lengths, False), argnums=(0, 1, 2))), (p, x, h0)


@needs_kernel
def test_cpu_programs_call_the_kernel_and_gpu_and_tpu_programs_do_not():
  fn, args = _grad_program(16)
  cpu = fn.lower(*args).as_text()
  isa = cpu_kernels.isa()
  assert f"gru_layer_forward_{isa}" in cpu and f"gru_layer_backward_{isa}" in cpu
  for platform in ("cuda", "rocm", "tpu"):
    exported = jax.export.export(fn, platforms=[platform])(*args)
    assert "gru_layer_" not in exported.mlir_module()
    assert "while" in exported.mlir_module()  # the scan that replaces it


@pytest.mark.parametrize("hidden,dtype", [(20, jnp.float32), (16, jnp.bfloat16)])
def test_shapes_and_types_the_kernel_does_not_take_fall_back_to_the_scan(hidden, dtype):
  fn, args = _grad_program(hidden, dtype)
  assert "gru_layer_" not in fn.lower(*args).as_text()
  reference, _ = _grad_program(hidden, dtype, recurrence="custom_vjp")
  for got, want in zip(jax.tree.leaves(fn(*args)), jax.tree.leaves(reference(*args))):
    np.testing.assert_array_equal(got, want)
