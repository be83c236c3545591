"""The Transformer encoder-decoder (Vaswani et al. 2017) on the model contract.

  logits, aux = model.apply(v, src, src_len, tgt_in, train=False)  # parallel over time
  memory      = model.apply(v, src, src_len, method=model.encode)
  state       = model.apply(v, memory, method=model.init_decode_state)  # key/value cache
  logits, state, attn = model.apply(v, state, token, method=model.decode_step)

Teacher forcing runs every target position at once under a causal mask;
`decode_step` runs one position, writing its self-attention keys/values into
a cache of `max_len` positions and attending over the filled part. Both go
through the same `DecoderLayer._block`, so they compute the same function
(tested). Encoder-decoder keys/values are projected once per sequence.

Attention is `attention.MultiHeadAttention` (the shared primitives: masked
softmax with padding lengths and a causal mask). `aux["attention"]` is the
last layer's cross-attention [batch, heads, tgt, src];
`aux["cross_attention"]` has every layer's.
"""

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from seq2seq_jax.errors import LengthError
from seq2seq_jax.models.attention import MultiHeadAttention
from seq2seq_jax.models.dropout import Dropout

Array = jax.Array

NORMS = ("pre", "post")
POSITIONALS = ("sinusoidal", "learned")


def sinusoidal_positions(length: int, d_model: int) -> np.ndarray:
  """PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(...): [length, d]."""
  pos = np.arange(length)[:, None]
  rates = np.exp(-math.log(10000.0) * (np.arange(0, d_model, 2) / d_model))
  table = np.zeros((length, d_model), np.float32)
  table[:, 0::2] = np.sin(pos * rates)
  table[:, 1::2] = np.cos(pos * rates)[:, :d_model // 2]
  return table


class FeedForward(nn.Module):
  d_ff: int
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool = False):
    h = nn.relu(nn.Dense(self.d_ff, name="wi")(x))
    h = Dropout(self.dropout, deterministic=not train)(h)
    return nn.Dense(x.shape[-1], name="wo")(h)


class _Sublayers(nn.Module):
  """Sizes and residual wiring shared by encoder and decoder layers:
  pre-LN  x + drop(f(LN(x)));  post-LN  LN(x + drop(f(x)))."""
  norm: str
  dropout: float
  num_heads: int = 8
  d_model: int = 512
  d_ff: int = 2048
  attention_dropout: float = 0.0

  def residual(self, x, f, norm_layer, train):
    drop = lambda y: self.residual_dropout(y, deterministic=not train)
    if self.norm == "pre":
      out, extra = f(norm_layer(x))
      return x + drop(out), extra
    out, extra = f(x)
    return norm_layer(x + drop(out)), extra


class EncoderLayer(_Sublayers):
  def setup(self):
    self.self_attn = MultiHeadAttention(self.num_heads, self.d_model,
                                        dropout=self.attention_dropout)
    self.ff = FeedForward(self.d_ff, self.dropout)
    self.norm1, self.norm2 = nn.LayerNorm(), nn.LayerNorm()
    self.residual_dropout = Dropout(self.dropout)

  def __call__(self, x, src_len, train: bool = False):
    x, _ = self.residual(
        x, lambda h: self.self_attn(h, h, valid_lens=src_len, train=train), self.norm1, train)
    x, _ = self.residual(x, lambda h: (self.ff(h, train), None), self.norm2, train)
    return x


class DecoderLayer(_Sublayers):
  def setup(self):
    self.self_attn = MultiHeadAttention(self.num_heads, self.d_model,
                                        dropout=self.attention_dropout)
    self.cross_attn = MultiHeadAttention(self.num_heads, self.d_model,
                                         dropout=self.attention_dropout)
    self.ff = FeedForward(self.d_ff, self.dropout)
    self.norm1, self.norm2, self.norm3 = nn.LayerNorm(), nn.LayerNorm(), nn.LayerNorm()
    self.residual_dropout = Dropout(self.dropout)

  def memory_kv(self, memory):
    """Encoder-decoder keys/values, projected once per source sequence."""
    return self.cross_attn.project_kv(memory)

  def _block(self, y, self_attend, memory_kv, src_len, train):
    y, _ = self.residual(y, self_attend, self.norm1, train)
    y, cross = self.residual(
        y, lambda h: self.cross_attn.attend_projected(h, *memory_kv, valid_lens=src_len,
                                                      train=train), self.norm2, train)
    y, _ = self.residual(y, lambda h: (self.ff(h, train), None), self.norm3, train)
    return y, cross

  def __call__(self, y, memory_kv, src_len, train: bool = False):
    """All target positions at once: y [batch, tgt, d] under a causal mask."""
    causal = jnp.tril(jnp.ones((y.shape[1], y.shape[1]), bool))

    def self_attend(h):
      k, v = self.self_attn.project_kv(h)
      return self.self_attn.attend_projected(h, k, v, mask=causal, train=train)

    return self._block(y, self_attend, memory_kv, src_len, train)

  def step(self, y_t, cache: dict, t, memory_kv, src_len):
    """One position: y_t [batch, 1, d] at position t [batch]; the cache holds
    this layer's self-attention keys/values [batch, max_len, heads, head_dim].
    Returns (output, cross weights, new cache)."""
    new_cache = {}

    def self_attend(h):
      k_t, v_t = self.self_attn.project_kv(h)
      at_t = (jnp.arange(cache["k"].shape[1])[None, :] == t[:, None])[:, :, None, None]
      new_cache["k"] = jnp.where(at_t, k_t, cache["k"])
      new_cache["v"] = jnp.where(at_t, v_t, cache["v"])
      # Positions 0..t are filled: a length of t + 1 masks the rest.
      return self.self_attn.attend_projected(h, new_cache["k"], new_cache["v"],
                                             valid_lens=t + 1)

    y, cross = self._block(y_t, self_attend, memory_kv, src_len, False)
    return y, cross, new_cache


class Transformer(nn.Module):
  """Encoder-decoder Transformer.

  Attributes:
    src_vocab_size, tgt_vocab_size: vocabulary sizes.
    num_layers: encoder and decoder layers (each).
    d_model, num_heads, d_ff: sizes.
    dropout: on embeddings+positions and on each sublayer's output.
    attention_dropout: on attention weights.
    norm: "pre" (LayerNorm before each sublayer, plus a final one) or "post"
      (after each residual, as in the paper).
    positional: "sinusoidal" or "learned".
    max_len: longest source or target (positions and the decode cache);
      anything longer is refused (`check_positions`).
    tie_output: the output layer reuses the target embedding matrix.
    share_embeddings: one embedding for source and target (needs one
      vocabulary: `data.shared_vocab`).
  """
  src_vocab_size: int
  tgt_vocab_size: int
  num_layers: int = 6
  d_model: int = 512
  num_heads: int = 8
  d_ff: int = 2048
  dropout: float = 0.1
  attention_dropout: float = 0.0
  norm: str = "pre"
  positional: str = "sinusoidal"
  max_len: int = 256
  tie_output: bool = False
  share_embeddings: bool = False

  def setup(self):
    if self.norm not in NORMS:
      raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
    if self.positional not in POSITIONALS:
      raise ValueError(f"positional must be one of {POSITIONALS}, got {self.positional!r}")
    if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
      raise ValueError("share_embeddings needs one vocabulary for source and target")
    embed = lambda n: nn.Embed(n, self.d_model,
                               embedding_init=nn.initializers.normal(self.d_model ** -0.5))
    self.tgt_embed = embed(self.tgt_vocab_size)
    if not self.share_embeddings:
      self.src_embed = embed(self.src_vocab_size)
    if self.positional == "learned":
      self.positions = self.param("positions", nn.initializers.normal(0.02),
                                  (self.max_len, self.d_model))
    else:
      self.positions = jnp.asarray(sinusoidal_positions(self.max_len, self.d_model))
    layer_args = dict(norm=self.norm, dropout=self.dropout, num_heads=self.num_heads,
                      d_model=self.d_model, d_ff=self.d_ff,
                      attention_dropout=self.attention_dropout)
    self.encoder_layers = [EncoderLayer(**layer_args) for _ in range(self.num_layers)]
    self.decoder_layers = [DecoderLayer(**layer_args) for _ in range(self.num_layers)]
    if self.norm == "pre":
      self.encoder_norm, self.decoder_norm = nn.LayerNorm(), nn.LayerNorm()
    if not self.tie_output:
      self.output = nn.Dense(self.tgt_vocab_size)
    self.embed_dropout = Dropout(self.dropout)

  @nn.nowrap
  def check_positions(self, length: int, what: str) -> None:
    """Raises LengthError when `length` tokens do not fit the `max_len`
    positions: past them, position lookups would clamp and cache writes
    would be dropped, silently. Lengths are static shapes here, so this is a
    Python check while tracing and costs the compiled program nothing."""
    if length > self.max_len:
      raise LengthError(f"{what} needs more than the Transformer's {self.max_len} positions "
                        "(config.model.transformer.max_len)")

  def _embed(self, table: nn.Embed, tokens, offset, train):
    """Scaled embeddings plus positions; tokens [batch, time] starting at
    position `offset` ([batch] or 0)."""
    pos = jnp.asarray(offset)[..., None] + jnp.arange(tokens.shape[1])
    x = table(tokens) * math.sqrt(self.d_model) + self.positions[pos]
    return self.embed_dropout(x, deterministic=not train)

  def _logits(self, y):
    if self.norm == "pre":
      y = self.decoder_norm(y)
    return self.tgt_embed.attend(y) if self.tie_output else self.output(y)

  # -- the contract ---------------------------------------------------------

  def encode(self, src, src_len, train: bool = False) -> dict:
    """src [batch, src_time] -> memory {"outputs" [batch, src_time, d], "src_len"}."""
    self.check_positions(src.shape[1], f"a source {src.shape[1]} tokens wide")
    table = self.tgt_embed if self.share_embeddings else self.src_embed
    x = self._embed(table, src, 0, train)
    for layer in self.encoder_layers:
      x = layer(x, src_len, train)
    if self.norm == "pre":
      x = self.encoder_norm(x)
    return {"outputs": x, "src_len": src_len}

  def __call__(self, src, src_len, tgt_in, train: bool = False, gold_prob=None,
               sample_predictions: bool = False, tgt_len=None):
    """Teacher forcing, all target positions in parallel.

    With `gold_prob`, scheduled sampling by the two-pass method (Mihaylova &
    Martins 2019): a first teacher-forced pass without dropout or gradient
    predicts every position; the second pass reads, at each position and row,
    the gold previous token with probability gold_prob, otherwise the first
    pass's prediction (argmax, or a sample). Needs the "sampling" RNG.
    gold_prob = 1 gives exactly the teacher-forced result.

    Returns logits [batch, tgt, vocab] and aux: "attention" (last layer's
    cross-attention, [batch, heads, tgt, src]), "cross_attention" (a tuple,
    one per layer) and, with scheduled sampling, "gold_fraction".
    tgt_len (the RNN models' skip of padded steps) changes nothing here:
    every position is computed at once, under the causal mask.
    """
    if gold_prob is None:
      return self._forward(src, src_len, tgt_in, train)
    first, _ = self._forward(src, src_len, tgt_in, False)
    first = jax.lax.stop_gradient(first)
    key = self.make_rng("sampling")
    if sample_predictions:
      pred = jax.random.categorical(jax.random.fold_in(key, 1), first)
    else:
      pred = jnp.argmax(first, axis=-1)
    # Position t reads the token after position t-1: the prediction made there.
    shifted = jnp.concatenate([tgt_in[:, :1], pred[:, :-1].astype(tgt_in.dtype)], axis=1)
    use_gold = jax.random.uniform(key, tgt_in.shape) < gold_prob
    use_gold = use_gold.at[:, 0].set(True)  # <bos> is always given
    logits, aux = self._forward(src, src_len, jnp.where(use_gold, tgt_in, shifted), train)
    aux["gold_fraction"] = jnp.mean(use_gold.astype(jnp.float32))
    return logits, aux

  def _forward(self, src, src_len, tgt_in, train: bool):
    memory = self.encode(src, src_len, train)
    self.check_positions(tgt_in.shape[1], f"a target {tgt_in.shape[1]} tokens wide")
    y = self._embed(self.tgt_embed, tgt_in, 0, train)
    crosses = []
    for layer in self.decoder_layers:
      y, cross = layer(y, layer.memory_kv(memory["outputs"]), src_len, train)
      crosses.append(cross)
    return self._logits(y), {"attention": crosses[-1], "cross_attention": tuple(crosses)}

  def init_decode_state(self, memory: dict) -> dict:
    """A key/value cache of `max_len` positions per layer, the projected
    encoder memory per layer, and the position [batch] of the next token."""
    batch = memory["src_len"].shape[0]
    head_dim = self.d_model // self.num_heads
    empty = jnp.zeros((batch, self.max_len, self.num_heads, head_dim), memory["outputs"].dtype)
    return {
        "t": jnp.zeros((batch,), jnp.int32),
        "src_len": memory["src_len"],
        "cache": tuple({"k": empty, "v": empty} for _ in self.decoder_layers),
        "memory_kv": tuple(layer.memory_kv(memory["outputs"]) for layer in self.decoder_layers),
    }

  def decode_step(self, state: dict, token):
    """token [batch] -> (logits [batch, vocab], new state, last layer's
    cross-attention [batch, heads, src])."""
    t = state["t"]
    y = self._embed(self.tgt_embed, token[:, None], t, False)
    caches = []
    for layer, cache, memory_kv in zip(self.decoder_layers, state["cache"], state["memory_kv"]):
      y, cross, cache = layer.step(y, cache, t, memory_kv, state["src_len"])
      caches.append(cache)
    logits = self._logits(y)[:, 0]
    return logits, dict(state, t=t + 1, cache=tuple(caches)), cross[:, :, 0]
