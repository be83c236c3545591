"""The compiled CPU kernels (seq2seq_jax/models/cpu/*.cc, built by pip into
the extension `_cpu_kernels`): whether they can run here, and how they are
called from JAX.

Each kernel runs a whole loop over time, forward or backward, as one XLA FFI
call, and has a pure-JAX twin that computes the same function: `gru_cpu`
(a GRU layer's recurrence) and `decoder_cpu` (a Bahdanau decoder's
teacher-forced loop). Their wrappers use a kernel only when `available()`,
and only in programs compiled for the CPU (`jax.lax.platform_dependent`
lowers the pure-JAX twin on GPU and TPU).
"""

import functools

import jax
import jax.numpy as jnp


@functools.cache
def available() -> bool:
  """Whether the extension was built and this CPU can run its kernels
  (AVX-512F/DQ); then their FFI targets are registered with JAX."""
  try:
    from seq2seq_jax.models import _cpu_kernels  # built by setup.py
  except ImportError:
    return False
  if not _cpu_kernels.avx512():
    return False
  for name, capsule in _cpu_kernels.handlers().items():
    jax.ffi.register_ffi_target(name, capsule, platform="cpu")
  return True


def takes(*arrays, multiple_of: tuple = ()) -> bool:
  """Whether the kernels can take these arrays: `available()`, every one
  float32, and every size in `multiple_of` a multiple of 16."""
  return (available() and all(a.dtype == jnp.float32 for a in arrays)
          and all(n % 16 == 0 for n in multiple_of))


def f32(*shape) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(shape, jnp.float32)


def call(name: str, results, *args, **attributes):
  """Runs the kernel `name` (attributes: its static parameters). Under
  jax.vmap (the members of an ensemble) every argument gets the mapped axis
  in front ("broadcast_all"), and the kernel runs the stacked problems one
  after the other."""
  return jax.ffi.ffi_call(name, results, vmap_method="broadcast_all")(*args, **attributes)
