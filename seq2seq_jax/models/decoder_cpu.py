"""The teacher-forced loop of a Bahdanau decoder with GRU layers as one
compiled CPU kernel call, forward and backward (cpu/bahdanau_decoder.cc),
with the model's own scan as its automatic fallback.

`RNNSeq2Seq` calls `teacher_forced` for decoder="bahdanau" with GRU cells,
the additive score, softmax and `recurrence="fused"`; dropout between
decoder layers comes in as masks drawn from the keys the scan uses. Inside, the kernel runs when the kernels are available
(`cpu_kernels`), the program is compiled for the CPU, every array is
float32 and the embedding, hidden, attention and memory sizes are
multiples of 16;
otherwise the model's scan (`fallback`) runs, and it is also what the tests
compare the kernel's values and gradients against.

The kernel computes the keys' projection and every step of the loop in one
call (the embeddings' share of the first layer's input included), the
batch's rows split over two cores, each row only for its `tgt_len` steps
(its outputs after them are zero, as the model makes them on every path
when given the lengths);
XLA's scan pays several microseconds for each of the dozens of operations
of every step, forward and backward. The backward pass recomputes the
attention's tanh layer, as the scan does (`attention.additive_scores`), and
adds up the weights' gradients as it goes.
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from seq2seq_jax.models import cpu_kernels
from seq2seq_jax.models.cpu_kernels import f32

Array = jax.Array


class DecoderArrays(NamedTuple):
  """What the loop reads, in the kernel's argument order. T steps, batch B,
  source length S, L layers of hidden size H (G = 3H), embedding size E,
  attention size A, memory size D."""
  e: Array        # [B, T, E] the target embeddings (after dropout)
  memory: Array   # [B, S, D] the encoder's outputs: the values, and the keys' source
  src_len: Array  # int32 [B]
  tgt_len: Array  # int32 [B] the steps each row runs (the rest of its outputs are zero)
  h0: Array       # [L, B, H] the initial carries
  w_ie: Array     # [E, G] the embedding's rows of layer 0's w_i
  b_i0: Array     # [G] layer 0's b_i
  w_ic: Array     # [D, G] the context's rows of layer 0's w_i
  w_k: Array      # [D, A]
  b_k: Array      # [A]
  w_q: Array      # [H, A]
  v: Array        # [A]
  w_h: Array      # [L, H, G]
  b_h: Array      # [L, G]
  w_i: Array      # [L - 1, H, G] layers 1..L-1
  b_i: Array      # [L - 1, G]
  masks: Array    # [T, L - 1, B, H] dropout masks on layers 1..'s inputs (0 or 1 / keep
                  # probability), or [0] without dropout


def _sizes(a: DecoderArrays):
  b, t, e = a.e.shape
  s, d = a.memory.shape[1:]
  layers, h = a.h0.shape[0], a.h0.shape[-1]
  return t, b, e, s, d, layers, h, 3 * h, a.w_k.shape[-1]


def _forward(a: DecoderArrays):
  t, b, _, s, d, layers, h, g, att = _sizes(a)
  return cpu_kernels.call(
      "bahdanau_decoder_forward",
      (f32(t, b, h), f32(t, b, d), f32(t, b, s), f32(b, s, att), f32(t, layers, b, h),
       f32(t, layers, b, g), f32(t, layers, b, g), f32(t, b, att)), *a)


@jax.custom_vjp
def _kernel(a: DecoderArrays):
  return tuple(_forward(a)[:3])


def _kernel_fwd(a: DecoderArrays):
  tops, contexts, weights, *saved = _forward(a)
  return (tops, contexts, weights), (a, contexts, weights, saved)


def _kernel_bwd(residuals, grads):
  a, contexts, weights, (keys, carries, hps, xps, qs) = residuals
  t, b, e, s, d, layers, h, g, att = _sizes(a)
  out = cpu_kernels.call(
      "bahdanau_decoder_backward",
      (f32(b, t, e), f32(b, s, d), f32(layers, b, h), f32(e, g), f32(g), f32(d, g), f32(d, att),
       f32(att), f32(h, att), f32(att), f32(layers, h, g), f32(layers, g),
       f32(layers - 1, h, g), f32(layers - 1, g)),
      a.e, a.memory, a.src_len, a.tgt_len, a.h0, a.w_ie, a.w_ic, a.w_k, a.w_q, a.v, a.w_h,
      a.w_i, a.masks, keys, contexts, weights, carries, hps, xps, qs, *grads)
  d_e, d_memory, d_h0, d_w_ie, d_b_i0, d_w_ic, d_w_k, d_b_k, d_w_q, d_v, d_w_h, d_b_h, d_w_i, \
      d_b_i = out
  return (DecoderArrays(d_e, d_memory, None, None, d_h0, d_w_ie, d_b_i0, d_w_ic, d_w_k, d_b_k, d_w_q,
                        d_v, d_w_h, d_b_h, d_w_i, d_b_i, None),)


_kernel.defvjp(_kernel_fwd, _kernel_bwd)


def teacher_forced(arrays: DecoderArrays, fallback: Callable[[DecoderArrays], tuple]) -> tuple:
  """(tops [T, B, H], contexts [T, B, D], weights [T, B, S]): the top
  layer's state, the context and the attention weights at every step, from
  the kernel where it can run (zero after a row's tgt_len steps), else from
  `fallback(arrays)` (every step; the caller zeroes the same ones)."""
  sizes = (arrays.e.shape[-1], arrays.h0.shape[-1], arrays.w_k.shape[-1],
           arrays.memory.shape[-1])
  kernel_arrays = [x for name, x in arrays._asdict().items()
                   if name not in ("src_len", "tgt_len")]
  if not cpu_kernels.takes(*kernel_arrays, multiple_of=sizes):
    return fallback(arrays)
  return jax.lax.platform_dependent(arrays, cpu=_kernel, default=fallback)
