"""The teacher-forced loop of a Bahdanau decoder with GRU layers as one
compiled CPU kernel call, forward and backward (cpu/bahdanau_decoder.cc),
with the model's own scan as its automatic fallback.

`RNNSeq2Seq` calls `teacher_forced` for decoder="bahdanau" with GRU cells,
the additive score, softmax and `recurrence="fused"`; dropout between
decoder layers comes in as masks drawn from the keys the scan uses. Inside, the kernel runs when the kernels are available
(`cpu_kernels`), the program is compiled for the CPU, every array is
float32 and the hidden, attention and memory sizes are multiples of 16;
otherwise the model's scan (`fallback`) runs, and it is also what the tests
compare the kernel's values and gradients against.

The kernel computes every step of the loop in one call, the batch's rows
split over two cores; XLA's scan pays several microseconds for each of the
dozens of operations of every step, forward and backward. The backward
pass recomputes the attention's tanh layer, as the scan does
(`attention.additive_scores`), and adds up the weights' gradients as it goes.
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from seq2seq_jax.models import cpu_kernels
from seq2seq_jax.models.cpu_kernels import f32

Array = jax.Array


class DecoderArrays(NamedTuple):
  """What the loop reads. T steps, batch B, source length S, L layers of
  hidden size H (G = 3H), attention size A, memory size D."""
  ep: Array       # [T, B, G] the embedding's share of layer 0's input pre-activations, with b_i
  keys: Array     # [B, S, A] the projected keys (w_k, b_k applied)
  values: Array   # [B, S, D] the memory
  src_len: Array  # int32 [B]
  h0: Array       # [L, B, H] the initial carries
  w_q: Array      # [H, A]
  v: Array        # [A]
  w_ic: Array     # [D, G] the context's rows of layer 0's w_i
  w_h: Array      # [L, H, G]
  b_h: Array      # [L, G]
  w_i: Array      # [L - 1, H, G] layers 1..L-1
  b_i: Array      # [L - 1, G]
  masks: Array    # [T, L - 1, B, H] dropout masks on layers 1..'s inputs (0 or 1 / keep
                  # probability), or [0] without dropout


def _forward(a: DecoderArrays):
  t, b, g = a.ep.shape
  h, (s, att), d, layers = g // 3, a.keys.shape[1:], a.values.shape[-1], a.h0.shape[0]
  return cpu_kernels.call(
      "bahdanau_decoder_forward",
      (f32(t, b, h), f32(t, b, d), f32(t, b, s), f32(t, layers, b, h), f32(t, layers, b, g),
       f32(t, layers, b, g), f32(t, b, att)), *a)


@jax.custom_vjp
def _kernel(a: DecoderArrays):
  return _forward(a)[:3]


def _kernel_fwd(a: DecoderArrays):
  tops, contexts, weights, carries, hps, xps, qs = _forward(a)
  return (tops, contexts, weights), (a, contexts, weights, carries, hps, xps, qs)


def _kernel_bwd(residuals, grads):
  a, contexts, weights, carries, hps, xps, qs = residuals
  t, b, g = a.ep.shape
  h, (s, att), d, layers = g // 3, a.keys.shape[1:], a.values.shape[-1], a.h0.shape[0]
  out = cpu_kernels.call(
      "bahdanau_decoder_backward",
      (f32(t, b, g), f32(b, s, att), f32(b, s, d), f32(layers, b, h), f32(h, att), f32(att),
       f32(d, g), f32(layers, h, g), f32(layers, g), f32(layers - 1, h, g), f32(layers - 1, g)),
      a.keys, a.values, a.src_len, a.h0, a.w_q, a.v, a.w_ic, a.w_h, a.w_i, a.masks, contexts,
      weights,
      carries, hps, xps, qs, *grads)
  d_ep, d_keys, d_values, d_h0, d_w_q, d_v, d_w_ic, d_w_h, d_b_h, d_w_i, d_b_i = out
  return (DecoderArrays(d_ep, d_keys, d_values, None, d_h0, d_w_q, d_v, d_w_ic, d_w_h, d_b_h,
                        d_w_i, d_b_i, None),)


_kernel.defvjp(_kernel_fwd, _kernel_bwd)


def teacher_forced(arrays: DecoderArrays, fallback: Callable[[DecoderArrays], tuple]) -> tuple:
  """(tops [T, B, H], contexts [T, B, D], weights [T, B, S]): the top
  layer's state, the context and the attention weights at every step, from
  the kernel where it can run, else from `fallback(arrays)`."""
  _, attention = arrays.keys.shape[1:]
  sizes = (arrays.w_h.shape[-2], attention, arrays.values.shape[-1])
  kernel_arrays = [x for i, x in enumerate(arrays) if i != DecoderArrays._fields.index("src_len")]
  if not cpu_kernels.takes(*kernel_arrays, multiple_of=sizes):
    return fallback(arrays)
  return jax.lax.platform_dependent(arrays, cpu=_kernel, default=fallback)
