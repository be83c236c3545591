"""The compiled CPU kernels (seq2seq_jax/models/cpu/*.cc, built by pip into
the extension `_cpu_kernels`): whether they can run here, with which
instruction set, and how they are called from JAX.

Each kernel runs a whole loop over time, forward or backward, as one XLA FFI
call, and has a pure-JAX twin that computes the same function: `gru_cpu`
(a GRU layer's recurrence) and `decoder_cpu` (a Bahdanau decoder's
teacher-forced loop). Their wrappers use a kernel only when `available()`,
and only in programs compiled for the CPU (`jax.lax.platform_dependent`
lowers the pure-JAX twin on GPU and TPU).

Every kernel is compiled for AVX-512 (AVX-512F/DQ) and for AVX2 (with FMA):
the same bits from both, AVX-512's sooner. Programs use `isa()`, read when
they are traced: the best this CPU runs, or what the environment variable
SEQ2SEQ_JAX_CPU_KERNELS says ("avx512", "avx2", or "off" for the pure-JAX
loops).
"""

import contextlib
import functools
import os

import jax
import jax.numpy as jnp

from seq2seq_jax.errors import ConfigError

ISAS = ("avx512", "avx2")  # best first
ENV = "SEQ2SEQ_JAX_CPU_KERNELS"
_forced = []  # the innermost `forced_isa`, last


@functools.cache
def supported() -> tuple:
  """The instruction sets this CPU can run the kernels with, best first:
  () without the extension (not built, or not x86-64). Their FFI targets are
  registered with JAX."""
  try:
    from seq2seq_jax.models import _cpu_kernels  # built by setup.py
  except ImportError:
    return ()
  for name, capsule in _cpu_kernels.handlers().items():
    jax.ffi.register_ffi_target(name, capsule, platform="cpu")
  return tuple(_cpu_kernels.isas())


def isa() -> str | None:
  """The instruction set of the kernels in programs traced now: the
  innermost `forced_isa`, else SEQ2SEQ_JAX_CPU_KERNELS if set, else the best
  this CPU runs; None: no kernels ("off", or none can run here)."""
  if _forced:
    return _forced[-1]
  return _chosen(os.environ.get(ENV, ""))


@functools.cache
def _chosen(setting: str) -> str | None:
  allowed = supported() + ("off",)
  if setting and setting not in allowed:
    raise ConfigError(f"{ENV}={setting!r}: here it may be {' or '.join(map(repr, allowed))} "
                     "(an instruction set this CPU runs the kernels with, or none)")
  if setting == "off":
    return None
  return setting or next(iter(supported()), None)


def available() -> bool:
  """Whether programs traced now use the kernels (`isa()` is not None)."""
  return isa() is not None


@contextlib.contextmanager
def forced_isa(name: str):
  """Programs traced inside use the kernels compiled for `name`, one of
  `supported()` (tests: both instruction sets on one CPU). JAX caches traces
  by function, not by this setting, so if `name` is not `isa()` its caches
  are cleared on entry and exit: no program traced for the other
  instruction set is reused."""
  if name not in supported():
    raise ValueError(f"this CPU cannot run the kernels compiled for {name!r}; "
                     f"it runs {supported()}")
  switch = name != isa()
  if switch:
    jax.clear_caches()
  _forced.append(name)
  try:
    yield
  finally:
    _forced.pop()
    if switch:
      jax.clear_caches()


def takes(*arrays, multiple_of: tuple = ()) -> bool:
  """Whether the kernels can take these arrays: `available()`, every one
  float32, and every size in `multiple_of` a multiple of 16."""
  return (available() and all(a.dtype == jnp.float32 for a in arrays)
          and all(n % 16 == 0 for n in multiple_of))


def f32(*shape) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(shape, jnp.float32)


def call(name: str, results, *args, **attributes):
  """Runs the kernel `name` (attributes: its static parameters), compiled for
  `isa()`. Under jax.vmap (the members of an ensemble) every argument gets the
  mapped axis in front ("broadcast_all"), and the kernel runs the stacked
  problems one after the other."""
  target = f"{name}_{isa()}"
  return jax.ffi.ffi_call(target, results, vmap_method="broadcast_all")(*args, **attributes)
