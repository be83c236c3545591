"""A GRU layer's recurrence as one compiled CPU kernel call, forward and
backward, with the pure-JAX recurrence as its automatic fallback.

`carries(w_h, b_h, xs, valid, h0)` computes exactly what
`recurrent_vjp.carries("gru", ...)` computes (same equations, gate order and
masking; float32 sums in another order, and a polynomial exp good to about
2e-7), and so do its gradients (the tests compare both with autodiff of the
plain scan). It runs the kernel (`gru_cpu.cc`, built by pip into
`_gru_cpu`) when all of these hold, and `recurrent_vjp.carries` otherwise:

  - the extension was built and this CPU has AVX-512 (`available()`);
  - the program is compiled for the CPU: on GPU and TPU,
    `lax.platform_dependent` lowers only the fallback;
  - float32 and a hidden size that is a multiple of 16.

The kernel runs every step of the loop in one call, with each step's matmul
near the CPU's peak and the batch's rows split over two cores; XLA's scan
pays several microseconds per operation per step instead. The backward call
returns each step's gate gradients and the recurrent weights' gradient is
one matmul after it, as in `recurrent_vjp`. docs/results.md has the
measurements.
"""

import functools

import jax
import jax.numpy as jnp

from seq2seq_jax.models import recurrent_vjp

Array = jax.Array


@functools.cache
def available() -> bool:
  """Whether the kernel was built and this CPU can run it (then its FFI
  targets are registered with JAX)."""
  try:
    from seq2seq_jax.models import _gru_cpu  # the extension setup.py builds
  except ImportError:
    return False
  if not _gru_cpu.avx512():
    return False
  for name, capsule in _gru_cpu.handlers().items():
    jax.ffi.register_ffi_target(name, capsule, platform="cpu")
  return True


def supports(w_h: Array, xs: tuple) -> bool:
  """Whether `carries` can use the kernel for these shapes (on a CPU)."""
  return (available() and w_h.dtype == jnp.float32
          and all(x.dtype == jnp.float32 for x in xs) and w_h.shape[-2] % 16 == 0)


def _call(name: str, results, *args):
  # "broadcast_all": under jax.vmap (the two directions of a bidirectional
  # layer) every argument gets the mapped axis in front, and the kernel runs
  # the stacked problems one after the other.
  return jax.ffi.ffi_call(name, results, vmap_method="broadcast_all")(*args)


def _forward(w_h, b_h, xs, valid, h0):
  t, b, h = xs[0].shape
  return _call("gru_cpu_forward", (jax.ShapeDtypeStruct((t, b, h), jnp.float32),
                                   jax.ShapeDtypeStruct((t, b, 3 * h), jnp.float32)),
               w_h, b_h, *xs, valid, h0)


@jax.custom_vjp
def _kernel(w_h, b_h, xs, valid, h0):
  return _forward(w_h, b_h, xs, valid, h0)[0]


def _kernel_fwd(w_h, b_h, xs, valid, h0):
  seq, hps = _forward(w_h, b_h, xs, valid, h0)
  return seq, (w_h, xs, valid, h0, seq, hps)


def _kernel_bwd(residuals, grad_seq):
  w_h, xs, valid, h0, seq, hps = residuals
  t, b, h = seq.shape
  gates, da_n, grad_h0 = _call(
      "gru_cpu_backward", (jax.ShapeDtypeStruct((t, b, 3 * h), jnp.float32),
                           jax.ShapeDtypeStruct((t, b, h), jnp.float32),
                           jax.ShapeDtypeStruct((b, h), jnp.float32)),
      w_h, grad_seq, seq, h0, *xs, hps, valid)
  prev = jnp.concatenate([h0[None], seq[:-1]], axis=0)  # each step's input carry
  grad_w_h = jnp.einsum("tbi,tbj->ij", prev, gates)
  grad_r, grad_z, _ = jnp.split(gates, 3, axis=-1)
  # x_n enters as x_n + r * hn: its gradient is da_n (gates holds da_n * r).
  return grad_w_h, jnp.sum(gates, axis=(0, 1)), (grad_r, grad_z, da_n), None, grad_h0


_kernel.defvjp(_kernel_fwd, _kernel_bwd)


def carries(w_h: Array, b_h: Array, xs: tuple, valid: Array, h0: Array) -> Array:
  """The carry after every step, [time, batch, hidden]: the arguments and
  result of `recurrent_vjp.carries("gru", ...)`."""
  fallback = functools.partial(recurrent_vjp.carries, "gru")
  if not supports(w_h, xs):
    return fallback(w_h, b_h, xs, valid, h0)
  return jax.lax.platform_dependent(w_h, b_h, xs, valid, h0, cpu=_kernel, default=fallback)
