"""Decoding over the model contract (`encode`, `init_decode_state`,
`decode_step`), so it works for every model.

Greedy decoding runs in a `jax.lax.while_loop` that stops as soon as every
row has produced `<eos>` (or at `max_len`): no Python loop per token, one
compilation per (batch shape, max_len).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from seq2seq_jax.data.tokenizers import BOS, EOS, PAD

Array = jax.Array


def greedy_decode(model: nn.Module, params, src: Array, src_len: Array, max_len: int) -> dict:
  """Argmax decoding.

  Args:
    model: any model following the contract.
    src: int32 [batch, src_time]; src_len: int32 [batch]. Rows with
      src_len 0 (batch filler) count as finished from the start.
    max_len: most tokens to emit per row, `<eos>` included.
  Returns:
    tokens: int32 [batch, max_len], `<pad>` after each row's `<eos>`.
    lengths: int32 [batch], tokens emitted including `<eos>`.
    attention: [batch, max_len, src_time] weights of each emitted token
      (zeros after the end), or None for a model without attention.
  """
  variables = {"params": params}
  memory = model.apply(variables, src, src_len, method=model.encode)
  state = model.apply(variables, memory, method=model.init_decode_state)
  batch = src.shape[0]
  bos = jnp.full((batch,), BOS, jnp.int32)
  _, _, probe = jax.eval_shape(
      functools.partial(model.apply, variables, method=model.decode_step), state, bos)
  has_attention = probe is not None

  init = {
      "t": jnp.zeros((), jnp.int32),
      "state": state,
      "prev": bos,
      "done": src_len == 0,
      "tokens": jnp.full((batch, max_len), PAD, jnp.int32),
      "lengths": jnp.zeros((batch,), jnp.int32),
  }
  if has_attention:
    init["attention"] = jnp.zeros((batch, max_len) + probe.shape[1:], probe.dtype)

  def cond(c):
    return (c["t"] < max_len) & ~jnp.all(c["done"])

  def body(c):
    logits, state, weights = model.apply(variables, c["state"], c["prev"],
                                         method=model.decode_step)
    token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    live = ~c["done"]
    token = jnp.where(live, token, PAD)
    out = dict(c, t=c["t"] + 1, state=state, prev=token,
               done=c["done"] | (token == EOS),
               tokens=c["tokens"].at[:, c["t"]].set(token),
               lengths=c["lengths"] + live.astype(jnp.int32))
    if has_attention:
      weights = jnp.where(live.reshape((-1,) + (1,) * (weights.ndim - 1)), weights, 0.0)
      out["attention"] = c["attention"].at[:, c["t"]].set(weights)
    return out

  final = jax.lax.while_loop(cond, body, init)
  return {"tokens": final["tokens"], "lengths": final["lengths"],
          "attention": final.get("attention")}


def jit_greedy_decode(model: nn.Module, max_len: int):
  """`greedy_decode` compiled for `model` and `max_len`: f(params, src, src_len)."""
  return jax.jit(lambda params, src, src_len: greedy_decode(model, params, src, src_len, max_len))
