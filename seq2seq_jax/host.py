"""The host process's settings that our commands make before JAX starts.

On a CPU, XLA allocates a program's scratch memory (tens of megabytes for a
train step of the benchmark's models) with `posix_memalign` at every call and
frees it at the end. With JAX's default asynchronous dispatch the call runs
on one of XLA's worker threads, whose glibc arena cannot hold a block that
large, so glibc maps fresh pages from the kernel every call and unmaps them
after: every page of the scratch memory is a page fault again, every step.
On the 2-core machine of docs/results.md that was about 23,000 faults per
train step of the GRU models, a quarter of their step time.

`configure()` stops it: the calling thread runs the programs (synchronous
dispatch on the CPU: the step is waited for anyway), and glibc keeps freed
memory for reuse instead of returning it (no `mmap` for large blocks, no
trimming). That part leaves the arithmetic untouched: the same programs run
on the same inputs, and results are bit-identical. The price is resident
memory that stays at its peak, which a training process reaches anyway.

It also asks XLA's CPU code generator for 512-bit vectors where the CPU has
them (`--xla_cpu_prefer_vector_width=512`; XLA's default is 256, and a CPU
without AVX-512 keeps its widest). Elementwise loops then do twice the work
per instruction; sums may round differently in the last bits, as with any
change of vectorization. About 5 % off the recurrent models' train step on
the AVX-512 machine of docs/results.md.

`train.py`, `evaluate`, `translate`, the benchmark, `tools/profile_step.py`
and the tests (conftest) call it first thing; code that imports the models
into its own experiments can call it too, before its first JAX computation.
`SEQ2SEQ_JAX_HOST=default` skips it.
"""

import ctypes
import os
import platform

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1

ENV = "SEQ2SEQ_JAX_HOST"
VECTOR_FLAG = "--xla_cpu_prefer_vector_width"


def _glibc_keep_freed_memory() -> bool:
  """Large blocks from the heap, and freed memory kept: True if glibc took it."""
  if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
    return False
  libc = ctypes.CDLL(None)
  mallopt = getattr(libc, "mallopt", None)
  if mallopt is None:
    return False
  mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _INT_MAX))


_applied = None


def applied():
  """What `configure()` applied in this process, or None if it was not called."""
  return _applied


def configure() -> dict:
  """Applies the settings above unless $SEQ2SEQ_JAX_HOST is "default".

  Call before JAX's first computation (dispatch and XLA's flags are read
  when the CPU client starts). A vector width already in $XLA_FLAGS wins.
  Returns what was applied: {"malloc", "sync_cpu_dispatch", "vector_width_512"}.
  """
  global _applied
  if os.environ.get(ENV, "") == "default":
    _applied = {"malloc": False, "sync_cpu_dispatch": False, "vector_width_512": False}
    return _applied
  xla_flags = os.environ.get("XLA_FLAGS", "")
  wide = VECTOR_FLAG not in xla_flags
  if wide:
    os.environ["XLA_FLAGS"] = f"{xla_flags} {VECTOR_FLAG}=512".strip()
  import jax  # noqa: PLC0415  (after the caller's flag parsing: importing JAX is slow)
  jax.config.update("jax_cpu_enable_async_dispatch", False)
  _applied = {"malloc": _glibc_keep_freed_memory(), "sync_cpu_dispatch": True,
              "vector_width_512": wide}
  return _applied
