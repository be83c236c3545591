"""Recurrent encoder-decoder models: plain, Bahdanau and Luong decoders.

The model contract (see docs/ARCHITECTURE.md), batch-major throughout:

  logits, aux = model.apply(v, src, src_len, tgt_in, train=False)
  memory      = model.apply(v, src, src_len, method=model.encode)
  state       = model.apply(v, memory, method=model.init_decode_state)
  logits, state, attn = model.apply(v, state, token, method=model.decode_step)

The teacher-forced path is `_step` scanned over the target; `decode_step` is
the same `_step` applied once. Both read the same weights through the same
pure function, so training and decoding cannot disagree. What does not depend
on the recurrence is hoisted out of the scan: the embedding part of the first
decoder layer's input projection (all steps, one matmul), the key side of the
attention score (once per source sequence, in `init_decode_state`), the plain
decoder's context projection, and the output layer (after the scan).

Decoders:
  plain:    context = the encoder's final top-layer state, fed at every step
            (Cho et al. 2014). Input [e(y_{t-1}); c], readout W_o [h_t; c; e].
  bahdanau: context from attention with the *previous* decoder state as the
            query (Bahdanau et al. 2015). Input [e(y_{t-1}); c_t], readout
            W_o [h_t; c_t; e(y_{t-1})] (their deep output without the maxout).
  luong:    the *current* state h_t is the query (Luong et al. 2015); the
            attentional state h~_t = tanh(W_c [c_t; h_t]) feeds the output
            layer, and with input feeding h~_{t-1} joins the next input
            [e(y_{t-1}); h~_{t-1}].
Both attention decoders take any score function (`attention.SCORES`) and any
normalizer (`attention.NORMALIZERS`: softmax, sparsemax, top-k).
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from seq2seq_jax.models import attention as attn_lib
from seq2seq_jax.models import decoder_cpu
from seq2seq_jax.models import dropout as dropout_lib
from seq2seq_jax.models import recurrent

Array = jax.Array

DECODERS = ("plain", "bahdanau", "luong")
BRIDGES = ("dense", "zero")


class Readout(nn.Module):
  """The output layer, `x @ kernel + bias` with nn.Dense's parameters and
  initializers, whose weights can be read as arrays (`.kernel`, `.bias`) for
  use inside a scan."""
  in_features: int
  features: int

  def setup(self):
    self.kernel = self.param("kernel", nn.initializers.lecun_normal(),
                             (self.in_features, self.features))
    self.bias = self.param("bias", nn.initializers.zeros, (self.features,))

  def __call__(self, x: Array) -> Array:
    return x @ self.kernel + self.bias


def on_steps(x: Array, tgt_len: Optional[Array]) -> Array:
  """x [batch, tgt_time, ...] with zeros from each row's tgt_len on (x
  itself if tgt_len is None)."""
  if tgt_len is None:
    return x
  steps = attn_lib.length_mask(tgt_len, x.shape[1])
  return jnp.where(steps.reshape(steps.shape + (1,) * (x.ndim - 2)), x, jnp.zeros((), x.dtype))


class RNNSeq2Seq(nn.Module):
  """Embedding + recurrent encoder, recurrent decoder with optional attention.

  Attributes:
    src_vocab_size, tgt_vocab_size: vocabulary sizes (ids include specials).
    embed_dim: source and target embedding size.
    encoder_cell / decoder_cell: "rnn", "gru" or "lstm".
    encoder_hidden: hidden size per direction; encoder_layers: stacked layers.
    bidirectional: bidirectional encoder (outputs are [fwd; bwd]).
    decoder: "plain", "bahdanau" or "luong".
    decoder_hidden, decoder_layers: decoder sizes.
    attention_score: score function, one of `attention.SCORES`.
    attention_normalizer: "softmax", "sparsemax" or "topk".
    attention_topk: keys kept by the "topk" normalizer.
    attention_dim: size of the additive/concat score's tanh layer.
    input_feeding: (luong) feed the previous attentional state to the input.
    bridge: "dense" maps the encoder's final top-layer state through
      tanh(W s + b) to every decoder layer's initial state (any sizes,
      directions or cells); "zero" starts the decoder from zeros.
    dropout: on embeddings, between stacked layers and before the output layer.
    scan_unroll: time steps per loop iteration of the encoder and decoder
      scans (`lax.scan`'s `unroll`); the same function, only speed changes.
    recurrence: how recurrent layers run over a whole sequence
      (`recurrent.RECURRENCES`): the encoder's layers, and the plain
      decoder's in teacher forcing (its input does not depend on its output,
      so it runs layer by layer, like the encoder); the same function.
  """
  src_vocab_size: int
  tgt_vocab_size: int
  embed_dim: int = 64
  encoder_cell: str = "gru"
  encoder_hidden: int = 256
  encoder_layers: int = 2
  bidirectional: bool = False
  decoder: str = "bahdanau"
  decoder_cell: str = "gru"
  decoder_hidden: int = 256
  decoder_layers: int = 1
  attention_score: str = "additive"
  attention_normalizer: str = "softmax"
  attention_topk: int = 1
  attention_dim: int = 128
  input_feeding: bool = True
  bridge: str = "dense"
  dropout: float = 0.0
  scan_unroll: int = 1
  recurrence: str = "fused"

  def setup(self):
    if self.decoder not in DECODERS:
      raise ValueError(f"decoder must be one of {DECODERS}, got {self.decoder!r}")
    if self.bridge not in BRIDGES:
      raise ValueError(f"bridge must be one of {BRIDGES}, got {self.bridge!r}")
    self.src_embed = nn.Embed(self.src_vocab_size, self.embed_dim)
    self.tgt_embed = nn.Embed(self.tgt_vocab_size, self.embed_dim)
    self.encoder = recurrent.RecurrentEncoder(
        self.encoder_cell, self.embed_dim, self.encoder_hidden, self.encoder_layers,
        self.bidirectional, self.dropout, self.scan_unroll, self.recurrence)
    memory_dim = self.encoder_hidden * (2 if self.bidirectional else 1)
    self.cells = [
        recurrent.Cell(self.decoder_cell,
                       self.embed_dim + self._extra_input_dim() if l == 0 else self.decoder_hidden,
                       self.decoder_hidden, name=f"decoder_layer{l}")
        for l in range(self.decoder_layers)
    ]
    if self.decoder != "plain":
      self.scorer = attn_lib.Scorer(self.attention_score, self.decoder_hidden, memory_dim,
                                    self.attention_dim)
    if self.decoder == "luong":
      # W_c of h~ = tanh(W_c [c; h]); no bias, as in Luong et al.
      self.w_c = self.param("w_c", nn.initializers.lecun_normal(),
                            (memory_dim + self.decoder_hidden, self.decoder_hidden))
    if self.bridge == "dense":
      parts = 2 if self.decoder_cell == "lstm" else 1
      self.bridges = [nn.Dense(self.decoder_hidden, name=f"bridge{l}_{p}")
                      for l in range(self.decoder_layers) for p in range(parts)]
    features = (self.decoder_hidden if self.decoder == "luong"
                else self.decoder_hidden + memory_dim + self.embed_dim)
    self.output = Readout(features, self.tgt_vocab_size)
    self.drop = dropout_lib.Dropout(self.dropout)

  def _memory_dim(self) -> int:
    return self.encoder_hidden * (2 if self.bidirectional else 1)

  def _extra_input_dim(self) -> int:
    """What joins the embedding at the first decoder layer's input."""
    if self.decoder == "luong":
      return self.decoder_hidden if self.input_feeding else 0
    return self._memory_dim()  # the context vector

  # -- the contract ---------------------------------------------------------

  def encode(self, src: Array, src_len: Array, train: bool = False) -> dict:
    """src int32 [batch, src_time], src_len int32 [batch] -> memory:
    outputs [batch, src_time, memory_dim] (zero on padding), src_len, and
    final [batch, memory_dim] (each direction's state at the true length)."""
    x = self.drop(self.src_embed(src), deterministic=not train)
    outputs, finals = self.encoder(x, src_len, train=train)
    top = [recurrent.carry_hidden(self.encoder_cell, c) for c in finals[-1]]
    return {"outputs": outputs, "src_len": src_len, "final": jnp.concatenate(top, axis=-1)}

  def init_decode_state(self, memory: dict) -> dict:
    """The decoder state before the first target token (all leaves batch-major,
    so beam search can reorder them with one gather)."""
    batch = memory["src_len"].shape[0]
    kind, hidden = self.decoder_cell, self.decoder_hidden
    if self.bridge == "dense":
      parts = [jnp.tanh(b(memory["final"])) for b in self.bridges]
      if kind == "lstm":
        carry = tuple((parts[2 * l], parts[2 * l + 1]) for l in range(self.decoder_layers))
      else:
        carry = tuple(parts)
    else:
      carry = tuple(recurrent.zero_carry(kind, batch, hidden, memory["final"].dtype)
                    for _ in range(self.decoder_layers))
    state = {"carry": carry, "src_len": memory["src_len"]}
    if self.decoder != "plain":
      state["keys"] = self.scorer.project_keys(memory["outputs"])
      state["values"] = memory["outputs"]
      if self.decoder == "luong" and self.input_feeding:
        state["attentional"] = jnp.zeros((batch, self.decoder_hidden), memory["final"].dtype)
    else:
      state["context"] = memory["final"]
      state["context_proj"] = memory["final"] @ self.cells[0]()["w_i"][self.embed_dim:]
    return state

  def decode_step(self, state: dict, token: Array):
    """One decoder step. token int32 [batch] -> (logits [batch, vocab],
    new state, attention weights [batch, src_time], or None for "plain")."""
    params = self._step_params()
    e = self.tgt_embed(token)
    state, features, weights = self._step(
        params, state, e, self._embed_proj(params, e), None, False)
    return self.output(features), state, weights

  def __call__(self, src: Array, src_len: Array, tgt_in: Array, train: bool = False,
               gold_prob: Optional[Array] = None, sample_predictions: bool = False,
               tgt_len: Optional[Array] = None):
    """Teacher forcing. tgt_in int32 [batch, tgt_time] starts with <bos>.

    With `gold_prob` (a scalar, may be traced) this is scheduled sampling
    (Bengio et al. 2015): at each step and for each row, the gold previous
    token is fed with probability gold_prob, otherwise the model's own
    prediction from the step before (its argmax, or a sample with
    `sample_predictions`), drawn inside the scan. Needs the "sampling" RNG.
    gold_prob = 1 gives exactly the teacher-forced result.

    Returns logits [batch, tgt_time, vocab] and aux with "attention"
    [batch, tgt_time, src_time] (None for the plain decoder) and, with
    scheduled sampling, "gold_fraction" (share of steps fed the gold token).
    tgt_len: int32 [batch], each row's real steps (the batch's `tgt_len`),
    or None for all. Given, a row's features and attention weights are zero
    from its tgt_len on (its logits there the readout's bias) and the CPU
    kernels skip those steps; the loss must not read those positions (their
    weight is 0 in every batch).
    """
    memory = self.encode(src, src_len, train=train)
    state = self.init_decode_state(memory)
    params = self._step_params()
    e = self.drop(self.tgt_embed(tgt_in), deterministic=not train)
    ep = self._embed_proj(params, e)
    key = self.make_rng("dropout") if train and self.dropout > 0 and self.decoder_layers > 1 else None
    run_len = (jnp.full(tgt_in.shape[:1], tgt_in.shape[1], jnp.int32) if tgt_len is None
               else jnp.asarray(tgt_len, jnp.int32))  # the steps each row runs
    if gold_prob is None and self.decoder == "plain":
      features = self._plain_layers(params, state, e, ep, key, run_len)
      logits = self.output(self.drop(on_steps(features, tgt_len), deterministic=not train))
      return logits, {"attention": None}
    # Per gate and time-major, so each step reads contiguous slices (see
    # recurrent.cell_step).
    ep = recurrent.time_major_gates(ep, recurrent.num_gates(self.decoder_cell))
    xs = (jnp.swapaxes(e, 0, 1), ep, jnp.arange(tgt_in.shape[1]))
    aux = {}

    if gold_prob is None:
      def scan_loop(state, xs):
        def body(state, inputs):
          e_t, ep_t, t = inputs
          step_key = None if key is None else jax.random.fold_in(key, t)
          state, features, weights = self._step(params, state, e_t, ep_t, step_key, train)
          return state, (features, weights)
        return jax.lax.scan(body, state, xs, unroll=self.scan_unroll)[1]

      if self._fused_decoder():
        features, weights = self._fused_loop(params, state, e, memory["outputs"], run_len, key,
                                             scan_loop)
      else:
        features, weights = scan_loop(state, xs)
    else:
      features, weights, aux["gold_fraction"] = self._scheduled_scan(
          params, state, xs, key, train, gold_prob, sample_predictions)
    features = on_steps(jnp.swapaxes(features, 0, 1), tgt_len)
    logits = self.output(self.drop(features, deterministic=not train))
    aux["attention"] = None if weights is None else on_steps(jnp.swapaxes(weights, 0, 1), tgt_len)
    return logits, aux

  def _fused_decoder(self) -> bool:
    """Whether the teacher-forced loop goes to `decoder_cpu` (which still
    falls back to the scan where its kernel cannot run)."""
    return (self.recurrence == "fused" and self.decoder == "bahdanau"
            and self.decoder_cell == "gru" and self.attention_score == "additive"
            and self.attention_normalizer == "softmax")

  def _fused_loop(self, params: dict, state: dict, e: Array, memory: Array, tgt_len: Array,
                  key: Optional[Array], scan_loop):
    """`scan_loop(state)`'s (features, weights), time-major, through
    `decoder_cpu.teacher_forced` (the same at each row's first tgt_len
    steps; the kernel leaves zeros after them). e: [B, T, embed] (after
    dropout); memory: the encoder's outputs; key: the dropout key of the
    layers (None: no dropout between them)."""
    cells, hidden = params["cells"], self.decoder_hidden
    batch, steps = e.shape[:2]
    masks = jnp.zeros((0,), e.dtype)
    if key is not None:  # the masks `_step` draws: step t, layer l from fold_in(fold_in(key, t), l)
      ones = jnp.ones((batch, hidden), e.dtype)
      masks = jax.vmap(lambda t: jnp.stack([
          dropout_lib.dropout(jax.random.fold_in(jax.random.fold_in(key, t), l), self.dropout, ones)
          for l in range(self.decoder_layers - 1)]))(jnp.arange(steps))

    def stack(name, layers):  # [layers, ...]; layers 1.. (shaped like w_h, b_h) may be none
      if layers:
        return jnp.stack([c[name] for c in layers])
      like = cells[0]["w_h" if name == "w_i" else "b_h"]
      return jnp.zeros((0,) + like.shape, like.dtype)

    arrays = decoder_cpu.DecoderArrays(
        e=e, memory=memory, src_len=state["src_len"].astype(jnp.int32), tgt_len=tgt_len,
        h0=jnp.stack(state["carry"]),
        w_ie=cells[0]["w_i"][:self.embed_dim], b_i0=cells[0]["b_i"],
        w_ic=cells[0]["w_i"][self.embed_dim:], w_k=self.scorer.w_k, b_k=self.scorer.b_k,
        w_q=params["score"]["w_q"], v=params["score"]["v"], w_h=stack("w_h", cells),
        b_h=stack("b_h", cells), w_i=stack("w_i", cells[1:]), b_i=stack("b_i", cells[1:]),
        masks=masks)

    def fallback(a):  # the model's scan; returns what the kernel returns
      # Keys and the embeddings' projection from `a`, as init_decode_state and
      # __call__ make them, so that the two branches read the same arrays (a
      # gradient through the other branch's copies would cost matmuls of zeros).
      ep = recurrent.time_major_gates(a.e @ a.w_ie + a.b_i0, recurrent.num_gates("gru"))
      features, weights = scan_loop(
          dict(state, keys=a.memory @ a.w_k + a.b_k, values=a.memory),
          (jnp.swapaxes(a.e, 0, 1), ep, jnp.arange(steps)))
      return (features[..., :hidden], features[..., hidden:hidden + self._memory_dim()],
              weights)

    tops, contexts, weights = decoder_cpu.teacher_forced(arrays, fallback)
    return jnp.concatenate([tops, contexts, jnp.swapaxes(e, 0, 1)], axis=-1), weights

  def _scheduled_scan(self, params, state, xs, key, train, gold_prob, sample_predictions):
    """The decoder scan with each step's input chosen between the gold token
    and the previous step's prediction (see `__call__`)."""
    table = self.tgt_embed.embedding
    out_w, out_b = self.output.kernel, self.output.bias
    coin_key = self.make_rng("sampling")
    embed_key = self.make_rng("dropout") if train and self.dropout > 0 else None
    batch = state["src_len"].shape[0]

    def body(carry, inputs):
      state, prev_logits = carry
      e_gold, ep_gold, t = inputs
      k_t = jax.random.fold_in(coin_key, t)
      use_gold = (t == 0) | (jax.random.uniform(k_t, (batch,)) < gold_prob)
      if sample_predictions:
        pred = jax.random.categorical(jax.random.fold_in(k_t, 1), prev_logits)
      else:
        pred = jnp.argmax(prev_logits, axis=-1)
      e_pred = table[pred]
      if embed_key is not None:  # the same embedding dropout as the gold path
        e_pred = dropout_lib.dropout(jax.random.fold_in(embed_key, t), self.dropout, e_pred)
      e_t = jnp.where(use_gold[:, None], e_gold, e_pred)
      ep_pred = recurrent.split_gates(self._embed_proj(params, e_pred), len(ep_gold))
      ep_t = tuple(jnp.where(use_gold[:, None], g, p) for g, p in zip(ep_gold, ep_pred))
      step_key = None if key is None else jax.random.fold_in(key, t)
      state, features, weights = self._step(params, state, e_t, ep_t, step_key, train)
      logits = jax.lax.stop_gradient(features @ out_w + out_b)  # predictions only
      return (state, logits), (features, weights, use_gold)

    init = (state, jnp.zeros((batch, self.tgt_vocab_size), table.dtype))
    _, (features, weights, used) = jax.lax.scan(body, init, xs, unroll=self.scan_unroll)
    return features, weights, jnp.mean(used.astype(jnp.float32))

  def _plain_layers(self, params: dict, state: dict, e: Array, ep: Array,
                    key: Optional[Array], tgt_len: Array) -> Array:
    """The plain decoder's teacher-forced features [batch, tgt_time, features],
    layer by layer over the whole target: what scanning `_step` computes
    (at each row's first tgt_len steps), with the same dropout masks (drawn
    per step and layer from the same keys), but each layer one
    `recurrent.run_layer`."""
    kind, cells = self.decoder_cell, params["cells"]
    batch, steps = e.shape[:2]
    xp = ep + state["context_proj"][:, None, :]
    for l, layer in enumerate(cells):
      if l > 0:
        xp = recurrent.project(layer, x)
      x, _ = recurrent.run_layer(kind, layer, xp, tgt_len, state["carry"][l],
                                 unroll=self.scan_unroll, recurrence=self.recurrence)
      if key is not None and l < len(cells) - 1:
        x = jnp.swapaxes(jax.vmap(  # step t's mask from the key `_step` uses at t
            lambda t, xt: dropout_lib.dropout(jax.random.fold_in(jax.random.fold_in(key, t), l),
                                              self.dropout, xt))(
                jnp.arange(steps), jnp.swapaxes(x, 0, 1)), 0, 1)
    context = jnp.broadcast_to(state["context"][:, None, :], (batch, steps) + state["context"].shape[1:])
    return jnp.concatenate([x, context, e], axis=-1)

  # -- the shared step --------------------------------------------------------

  def _step_params(self) -> dict:
    """The weights `_step` reads, fetched outside any scan: Flax modules may
    not be called inside a raw JAX transform, plain arrays may."""
    params = {"cells": [c() for c in self.cells]}
    if self.decoder != "plain":
      params["score"] = self.scorer.params()
    if self.decoder == "luong":
      params["w_c"] = self.w_c
    return params

  def _attend(self, params: dict, state: dict, query: Array):
    scores = attn_lib.score_projected(self.attention_score, params["score"], query,
                                      state["keys"])
    weights = attn_lib.normalize(self.attention_normalizer, scores, state["src_len"],
                                 topk=self.attention_topk)
    return attn_lib.attend(weights, state["values"]), weights

  def _embed_proj(self, params: dict, e: Array) -> Array:
    """The embedding's share of layer 0's input projection (hoistable)."""
    layer0 = params["cells"][0]
    return e @ layer0["w_i"][:self.embed_dim] + layer0["b_i"]

  def _step(self, params: dict, state: dict, e_t: Array, ep_t: Array,
            key: Optional[Array], train: bool):
    """One step, pure in its array arguments so it can run inside `lax.scan`."""
    kind, cells = self.decoder_cell, params["cells"]
    gates = recurrent.num_gates(kind)
    ep_t = recurrent.split_gates(ep_t, gates)
    add = lambda a, b: tuple(x + y for x, y in zip(a, recurrent.split_gates(b, gates)))
    carry = state["carry"]
    weights = None
    extra = self.embed_dim  # rows of layer 0's w_i past the embedding's
    if self.decoder == "bahdanau":
      context, weights = self._attend(params, state, recurrent.carry_hidden(kind, carry[-1]))
      xp = add(ep_t, context @ cells[0]["w_i"][extra:])
    elif self.decoder == "luong":
      xp = ep_t
      if self.input_feeding:
        xp = add(xp, state["attentional"] @ cells[0]["w_i"][extra:])
    else:
      context = state["context"]
      xp = add(ep_t, state["context_proj"])
    new_carry = []
    for l, layer in enumerate(cells):
      if l > 0:
        xp = recurrent.project(layer, x)
      c = recurrent.cell_step(kind, layer, carry[l], xp)
      new_carry.append(c)
      x = recurrent.carry_hidden(kind, c)
      if train and key is not None and l < len(cells) - 1:
        x = dropout_lib.dropout(jax.random.fold_in(key, l), self.dropout, x)
    state = dict(state, carry=tuple(new_carry))
    if self.decoder == "luong":
      context, weights = self._attend(params, state, x)
      attentional = jnp.tanh(jnp.concatenate([context, x], axis=-1) @ params["w_c"])
      if self.input_feeding:
        state["attentional"] = attentional
      return state, attentional, weights
    features = jnp.concatenate([x, context, e_t], axis=-1)
    return state, features, weights
