"""The benchmarked models and their synthetic batches, in the batcher's exact format."""

import dataclasses
import math

import ml_collections
import numpy as np

from seq2seq_jax.data import batching
from seq2seq_jax.models.rnn_seq2seq import RNNSeq2Seq
from seq2seq_jax.models.transformer import Transformer
from seq2seq_jax.benchmark.options import FIRST_TOKEN, RNN_MODELS, Sizes


# -- synthetic batches ------------------------------------------------------------

def synthetic_batch(batch_size: int, src_len: int, tgt_len: int, src_vocab: int,
                    tgt_vocab: int, seed: int = 0) -> dict:
  """A batch in `data.batching`'s format, deterministic in its arguments.

  Source lengths and target lengths (`tgt_len`: target tokens + <eos>) are
  uniform in [ceil(L/2), L]; tokens uniform in [4, vocab). Every model (and
  PyTorch) sees the same batch at the same point.

  Returns NumPy arrays: src int32 [B, S], src_len int32 [B], tgt_in int32
  [B, T] (<bos> + target), tgt_out int32 [B, T] (target + <eos>), tgt_len
  int32 [B], weights float32 [B, T] (1 on real target positions), index
  int32 [B].
  """
  b, s, t = batch_size, src_len, tgt_len
  rng = np.random.default_rng([seed, b, s, t])
  src_lens = rng.integers(math.ceil(s / 2), s + 1, size=b)
  tgt_lens = rng.integers(math.ceil(t / 2), t + 1, size=b)
  src = rng.integers(FIRST_TOKEN, src_vocab, size=(b, s))
  target = rng.integers(FIRST_TOKEN, tgt_vocab, size=(b, t))
  # The batcher's own filling: <bos>/<eos>, padding and weights as in training.
  rows = ((src[i, :src_lens[i]], target[i, :tgt_lens[i] - 1], i) for i in range(b))
  return batching.fill_batch((s, t), b, rows)


# -- models ---------------------------------------------------------------------

def build_model(name: str, sizes: Sizes, max_len: int = 256):
  """The model called `name` (see MODELS). max_len: the Transformer's
  positions and decode cache (at least the longest source or target)."""
  if name == "transformer":
    return Transformer(src_vocab_size=sizes.src_vocab, tgt_vocab_size=sizes.tgt_vocab,
                       num_layers=sizes.transformer_layers, d_model=sizes.d_model,
                       num_heads=sizes.heads, d_ff=sizes.d_ff, dropout=sizes.dropout,
                       max_len=max_len)
  cell, decoder = RNN_MODELS[name]
  return RNNSeq2Seq(src_vocab_size=sizes.src_vocab, tgt_vocab_size=sizes.tgt_vocab,
                    embed_dim=sizes.embed, encoder_cell=cell, encoder_hidden=sizes.hidden,
                    encoder_layers=sizes.layers, bidirectional=False, decoder=decoder,
                    decoder_cell=cell, decoder_hidden=sizes.hidden,
                    decoder_layers=sizes.decoder_layers,
                    attention_score="general" if decoder == "luong" else "additive",
                    attention_dim=sizes.attention_dim, dropout=sizes.dropout)


def optimizer_config() -> ml_collections.ConfigDict:
  """What `training.create_train_state` needs: Adam after clipping to norm 1
  (the defaults of configs/default.py, and what torch_twins's models use)."""
  return ml_collections.ConfigDict(dict(
      optimizer="adam", learning_rate=1e-3, warmup_steps=10, num_steps=1000, decay="cosine",
      end_lr_factor=0.05, grad_clip_norm=1.0, weight_decay=0.0, precision="float32"))


def twin_sizes(name: str, sizes: Sizes) -> dict:
  """The `sizes` of `torch_twins.make_model`: ours, and our Transformer's
  normalization, which its twin follows."""
  norm_first = build_model(name, sizes).norm == "pre" if name == "transformer" else None
  return dict(dataclasses.asdict(sizes), norm_first=norm_first)
