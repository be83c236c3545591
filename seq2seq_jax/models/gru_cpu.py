"""A GRU layer as one compiled CPU kernel call, forward and backward
(cpu/gru_layer.cc), with the model's pure-JAX recurrence as its automatic
fallback.

`layer(params, x, lengths, carry, reverse, projected, fallback)` returns what
`recurrent.run_layer` returns, (outputs [B, T, H] zero on padding, final
carry [B, H]), for a GRU's weights and either its input x [B, T, E] (the
kernel does the projection x w_i + b_i too) or the projected input
(`projected`). Same equations, gate order, masking and reversal as the scan;
float32 sums in another order, and a polynomial exp good to about 2e-7. The
tests compare values and gradients with autodiff of the plain scan.

It runs the kernel when the kernels are available (`cpu_kernels`), the
program is compiled for the CPU (`jax.lax.platform_dependent` lowers
`fallback()` on GPU and TPU), the arrays are float32 and the hidden and
input sizes are multiples of 16; otherwise `fallback()`.

The kernel runs every step of the loop in one call, each step's matmuls near
the CPU's peak and the batch's rows split over two cores, reading and
writing the model's batch-major layout, and skipping the steps of a row's
padding (a row's carry just stays put there); XLA's scan pays several
microseconds per operation per step instead, plus transposes around the
loop, and computes every padded step. The backward call adds up the
weights' gradients as it goes. docs/results.md has the measurements.
"""

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from seq2seq_jax.models import cpu_kernels
from seq2seq_jax.models.cpu_kernels import f32

Array = jax.Array


def _forward(reverse, x, w_i, b_i, w_h, b_h, lengths, h0):
  b, t, _ = x.shape
  h, g = w_h.shape
  return cpu_kernels.call("gru_layer_forward",
                          (f32(b, t, h), f32(b, h), f32(t, b, h), f32(t, b, g), f32(t, b, g)),
                          x, w_i, b_i, w_h, b_h, lengths, h0, reverse=reverse)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _kernel(reverse, x, w_i, b_i, w_h, b_h, lengths, h0):
  return tuple(_forward(reverse, x, w_i, b_i, w_h, b_h, lengths, h0)[:2])


def _kernel_fwd(reverse, *args):
  out, final, seq, xps, hps = _forward(reverse, *args)
  return (out, final), (args, seq, xps, hps)


def _kernel_bwd(reverse, residuals, grads):
  (x, w_i, b_i, w_h, b_h, lengths, h0), seq, xps, hps = residuals
  b, h, g = h0.shape[0], w_h.shape[0], w_h.shape[1]
  d_x, d_h0, d_w_i, d_b_i, d_w_h, d_b_h = cpu_kernels.call(
      "gru_layer_backward", (f32(*x.shape), f32(b, h), f32(*w_i.shape), f32(g), f32(h, g), f32(g)),
      x, w_i, w_h, lengths, h0, seq, xps, hps, *grads, reverse=reverse)
  return d_x, d_w_i, d_b_i, d_w_h, d_b_h, None, d_h0


_kernel.defvjp(_kernel_fwd, _kernel_bwd)


def _arrays(params: dict, x: Array, lengths: Array, carry: Array, projected: bool) -> tuple:
  w_h = params["w_h"]
  gates = w_h.shape[1]
  w_i = jnp.zeros((0, gates), x.dtype) if projected else params["w_i"]
  b_i = jnp.zeros((gates,), x.dtype) if projected else params["b_i"]
  return x, w_i, b_i, w_h, params["b_h"], lengths.astype(jnp.int32), carry


def takes(params: dict, x: Array) -> bool:
  """Whether the kernel can run this layer (on a CPU): the kernels are
  available, the arrays float32, the hidden and input sizes multiples of 16."""
  leaves = (x, params["w_h"], params["b_h"]) + ((params["w_i"], params["b_i"])
                                                if "w_i" in params else ())
  return cpu_kernels.takes(*leaves, multiple_of=(params["w_h"].shape[0], x.shape[-1]))


def kernel_layer(params: dict, x: Array, lengths: Array, carry: Array, reverse: bool,
                 projected: bool) -> tuple:
  """`layer` on the kernel, unconditionally: only where `takes` holds, in a
  program for the CPU."""
  return _kernel(reverse, *_arrays(params, x, lengths, carry, projected))


def layer(params: dict, x: Array, lengths: Array, carry: Array, reverse: bool, projected: bool,
          fallback: Callable[[], tuple]) -> tuple:
  """(outputs [B, T, H], final [B, H]) of a GRU layer with weights `params`
  (`recurrent.Cell`'s dict) over x [B, T, E], or over x = x w_i + b_i
  [B, T, 3H] when `projected`; from the kernel where it can run, else from
  `fallback()`, which must compute the same."""
  if not takes(params, x):
    return fallback()
  return jax.lax.platform_dependent(*_arrays(params, x, lengths, carry, projected),
                                    cpu=functools.partial(_kernel, reverse),
                                    default=lambda *_: fallback())
