"""Decoding over the model contract (`encode`, `init_decode_state`,
`decode_step`), so it works for every model.

Greedy decoding, sampling and beam search each run in a `jax.lax.while_loop`
that stops as soon as every row has finished (or at `max_len`): no Python
loop per token, one compilation per (batch shape, max_len, settings). A
`max_len` past a model's positions (a Transformer's) is a LengthError.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from seq2seq_jax.data.tokenizers import BOS, EOS, PAD

Array = jax.Array


def check_positions(model: nn.Module, length: int, what: str) -> None:
  """A LengthError (a one-line UserError) when `length` tokens do not fit a
  model with a fixed number of positions: one that has `check_positions`,
  as the Transformer does; other models read any length."""
  check = getattr(model, "check_positions", None)
  if check is not None:
    check(length, what)


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
    steps: int32 [], loop iterations run (the longest row).
    attention: [batch, max_len, src_time] weights of each emitted token
      (zeros after the end), or None for a model without attention.
  """
  return _decode_loop(model, params, src, src_len, max_len,
                      lambda logits, t: jnp.argmax(logits, axis=-1))


def _decode_loop(model, params, src, src_len, max_len, choose) -> dict:
  """One token per row per iteration, `choose(logits, t)` picking it, in a
  while_loop that ends when every row has emitted <eos> or at max_len."""
  check_positions(model, max_len, f"decoding up to max_len={max_len} tokens")
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
    token = choose(logits, c["t"]).astype(jnp.int32)
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
          "attention": final.get("attention"), "steps": final["t"]}


def jit_greedy_decode(model: nn.Module, max_len: int):
  """`greedy_decode` compiled for `model` and `max_len`: f(params, src, src_len)."""
  return jax.jit(lambda params, src, src_len: greedy_decode(model, params, src, src_len, max_len))


def jit_decode(model: nn.Module, max_len: int, beam_size: int = 1, alpha: float = 0.6,
               penalty: str = "gnmt"):
  """The decoder every evaluation path uses: greedy (beam_size 1) or beam
  search, compiled. f(params, src, src_len) -> {"tokens" int32 [batch, n,
  max_len] and "lengths" [batch, n] (n = beam_size hypotheses, best first;
  1 for greedy), "scores" [batch, n] (beam search; None for greedy),
  "attention" of the best hypothesis (or None), "steps"}."""
  if beam_size == 1:
    def greedy(params, src, src_len):
      out = greedy_decode(model, params, src, src_len, max_len)
      return dict(out, tokens=out["tokens"][:, None], lengths=out["lengths"][:, None],
                  scores=None)
    return jax.jit(greedy)
  return jax.jit(lambda params, src, src_len: beam_search(model, params, src, src_len, max_len,
                                                          beam_size, alpha, penalty))


# -- sampling ------------------------------------------------------------------

def filter_logits(logits: Array, temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 1.0) -> Array:
  """Logits to sample from: scaled by 1/temperature, then everything outside
  the top_k tokens (0 = no limit) and outside the smallest set whose
  probability reaches top_p (1.0 = no limit) set to -inf."""
  logits = logits / temperature
  neg = jnp.finfo(logits.dtype).min
  if top_k > 0:
    kth = jax.lax.top_k(logits, min(top_k, logits.shape[-1]))[0][..., -1:]
    logits = jnp.where(logits < kth, neg, logits)
  if top_p < 1.0:
    sorted_logits = -jnp.sort(-logits, axis=-1)
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass of strictly better tokens
    cutoff = jnp.min(jnp.where(before < top_p, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits < cutoff, neg, logits)
  return logits


def sample_decode(model: nn.Module, params, src: Array, src_len: Array, max_len: int,
                  rng: Array, temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 1.0) -> dict:
  """Ancestral sampling with temperature, top-k and top-p (nucleus).

  The key for step t is `fold_in(rng, t)`, so a seed reproduces the output.
  temperature 0 means argmax (greedy). Returns what `greedy_decode` returns.
  """
  def choose(logits, t):
    if temperature == 0.0:
      return jnp.argmax(logits, axis=-1)
    key = jax.random.fold_in(rng, t)
    return jax.random.categorical(key, filter_logits(logits, temperature, top_k, top_p))

  return _decode_loop(model, params, src, src_len, max_len, choose)


# -- beam search -----------------------------------------------------------------

LENGTH_PENALTIES = ("gnmt", "normalize", "none")


def length_penalty(kind: str, length: Array, alpha: float) -> Array:
  """Divisor of a hypothesis' log-probability: GNMT ((5 + len) / 6)^alpha,
  plain normalization len^alpha, or 1."""
  length = length.astype(jnp.float32)
  if kind == "gnmt":
    return ((5.0 + length) / 6.0) ** alpha
  if kind == "normalize":
    return jnp.maximum(length, 1.0) ** alpha
  return jnp.ones_like(length)


def beam_search(model: nn.Module, params, src: Array, src_len: Array, max_len: int,
                beam_size: int = 4, alpha: float = 0.6, penalty: str = "gnmt") -> dict:
  """Batched beam search over the decoder-step contract.

  Each step expands every live beam by every token, keeps the 2k best
  candidates, moves those ending in `<eos>` to a separate finished set (so a
  finished hypothesis is never pushed out by live ones) and continues with
  the k best that did not end. The decoder state (recurrent carries,
  attention keys, a Transformer's cache) is reordered by one gather of the
  batch axis. The loop stops when every row's best live beam can no longer
  beat its worst finished one, or at max_len.

  Returns:
    tokens: int32 [batch, beam, max_len], best first, `<pad>` after `<eos>`.
    lengths: int32 [batch, beam]; scores: [batch, beam] (log-prob / penalty).
    attention: weights of the best hypothesis [batch, max_len, ...] or None.
  """
  check_positions(model, max_len, f"decoding up to max_len={max_len} tokens")
  variables = {"params": params}
  batch, k = src.shape[0], beam_size
  memory = model.apply(variables, src, src_len, method=model.encode)
  state = model.apply(variables, memory, method=model.init_decode_state)
  state = jax.tree.map(lambda x: jnp.repeat(x, k, axis=0), state)  # [batch * beam, ...]
  bos = jnp.full((batch * k,), BOS, jnp.int32)
  _, _, probe = jax.eval_shape(
      functools.partial(model.apply, variables, method=model.decode_step), state, bos)
  has_attention = probe is not None
  neg = jnp.float32(-1e9)

  init = {
      "t": jnp.zeros((), jnp.int32),
      "state": state,
      "alive_seq": jnp.full((batch, k, max_len), PAD, jnp.int32),
      # Only beam 0 is live at the start, so the first step does not pick k copies.
      "alive_lp": jnp.tile(jnp.array([0.0] + [neg] * (k - 1), jnp.float32), (batch, 1)),
      "fin_seq": jnp.full((batch, k, max_len), PAD, jnp.int32),
      "fin_score": jnp.full((batch, k), neg),
      "fin_len": jnp.zeros((batch, k), jnp.int32),
  }
  if has_attention:
    shape = (batch, k, max_len) + probe.shape[1:]
    init["alive_attn"] = jnp.zeros(shape, probe.dtype)
    init["fin_attn"] = jnp.zeros(shape, probe.dtype)

  def gather(x, idx):  # x [batch, 2k or k, ...], idx [batch, n] -> [batch, n, ...]
    return jnp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)

  def cond(c):
    best_possible = c["alive_lp"][:, 0] / length_penalty(penalty, jnp.asarray(max_len), alpha)
    worst_finished = c["fin_score"][:, -1]
    can_improve = jnp.any((best_possible > worst_finished) & (c["alive_lp"][:, 0] > neg / 2))
    return (c["t"] < max_len) & can_improve

  def body(c):
    t = c["t"]
    prev = jnp.where(t == 0, BOS, c["alive_seq"][:, :, jnp.maximum(t - 1, 0)]).reshape(-1)
    logits, state, weights = model.apply(variables, c["state"], prev, method=model.decode_step)
    vocab = logits.shape[-1]
    logp = jax.nn.log_softmax(logits.astype(jnp.float32)).reshape(batch, k, vocab)
    cand = (c["alive_lp"][:, :, None] + logp).reshape(batch, k * vocab)
    top_lp, top_idx = jax.lax.top_k(cand, 2 * k)  # [batch, 2k]
    beam, token = top_idx // vocab, (top_idx % vocab).astype(jnp.int32)
    seq = gather(c["alive_seq"], beam).at[:, :, t].set(token)
    ended = token == EOS
    out = dict(c, t=t + 1)
    if has_attention:
      attn = gather(c["alive_attn"], beam)
      w = gather(weights.reshape((batch, k) + weights.shape[1:]), beam)
      attn = attn.at[:, :, t].set(w)

    # Finished: merge the new <eos> candidates with the kept ones, keep k.
    new_score = jnp.where(ended, top_lp / length_penalty(penalty, t + 1, alpha), neg)
    all_score = jnp.concatenate([c["fin_score"], new_score], axis=1)
    best_fin_score, fin_idx = jax.lax.top_k(all_score, k)
    out["fin_score"] = best_fin_score
    out["fin_seq"] = gather(jnp.concatenate([c["fin_seq"], seq], 1), fin_idx)
    out["fin_len"] = gather(jnp.concatenate(
        [c["fin_len"], jnp.full((batch, 2 * k), t + 1, jnp.int32)], 1), fin_idx)
    if has_attention:
      out["fin_attn"] = gather(jnp.concatenate([c["fin_attn"], attn], 1), fin_idx)

    # Alive: the k best candidates that did not end.
    alive_lp, alive_idx = jax.lax.top_k(jnp.where(ended, neg, top_lp), k)
    out["alive_lp"] = alive_lp
    out["alive_seq"] = gather(seq, alive_idx)
    if has_attention:
      out["alive_attn"] = gather(attn, alive_idx)
    rows = (jnp.arange(batch)[:, None] * k + gather(beam, alive_idx)).reshape(-1)
    out["state"] = jax.tree.map(lambda x: x[rows], state)
    return out

  final = jax.lax.while_loop(cond, body, init)
  # Rows that finished nothing fall back to their live beams.
  any_fin = final["fin_score"][:, :1] > neg / 2
  alive_len = jnp.full((batch, k), max_len, jnp.int32)
  alive_score = final["alive_lp"] / length_penalty(penalty, alive_len, alpha)
  pick = lambda f, a: jnp.where(any_fin.reshape(any_fin.shape + (1,) * (f.ndim - 2)), f, a)
  result = {
      "tokens": pick(final["fin_seq"], final["alive_seq"]),
      "lengths": pick(final["fin_len"], alive_len),
      "scores": pick(final["fin_score"], alive_score),
      "attention": None,
      "steps": final["t"],
  }
  if has_attention:
    result["attention"] = pick(final["fin_attn"], final["alive_attn"])[:, 0]
  return result
