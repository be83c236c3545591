"""PyTorch reference models for `seq2seq_jax.benchmark --with_torch`.

Written the way the PyTorch seq2seq tutorials and course code write them
(eager mode, `nn.GRU` encoder, a Python loop over target steps in the
attention decoder, `nn.Transformer`), so the benchmark answers "how much
faster is this than the code people learn from". They compute the same
function as our JAX models of the same sizes: packed (length-masked) GRU
encoder, tanh bridge to the decoder's initial state, Bahdanau attention with
the previous decoder state as query and the key projection done once per
sequence, masked softmax, readout over [h; context; embedding], masked
cross-entropy, Adam after global-norm clipping.

Nothing in the package imports this module except the benchmark, and only
when asked to: PyTorch stays optional.
"""

import math

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

PAD = 0


class GRUBahdanau(nn.Module):
  """GRU encoder + GRU decoder with additive attention."""

  def __init__(self, src_vocab, tgt_vocab, embed=64, hidden=256, enc_layers=2, attn_dim=128,
               dropout=0.1):
    super().__init__()
    self.src_embed = nn.Embedding(src_vocab, embed)
    self.tgt_embed = nn.Embedding(tgt_vocab, embed)
    self.encoder = nn.GRU(embed, hidden, num_layers=enc_layers, batch_first=True,
                          dropout=dropout if enc_layers > 1 else 0.0)
    self.bridge = nn.Linear(hidden, hidden)
    self.w_query = nn.Linear(hidden, attn_dim, bias=False)
    self.w_key = nn.Linear(hidden, attn_dim)
    self.v = nn.Linear(attn_dim, 1, bias=False)
    self.cell = nn.GRUCell(embed + hidden, hidden)
    self.out = nn.Linear(hidden + hidden + embed, tgt_vocab)
    self.drop = nn.Dropout(dropout)

  def forward(self, src, src_len, tgt_in):
    x = self.drop(self.src_embed(src))
    packed = pack_padded_sequence(x, src_len.cpu(), batch_first=True, enforce_sorted=False)
    outputs, final = self.encoder(packed)
    memory, _ = pad_packed_sequence(outputs, batch_first=True, total_length=src.shape[1])
    h = torch.tanh(self.bridge(final[-1]))
    keys = self.w_key(memory)  # once per sequence
    mask = torch.arange(src.shape[1], device=src.device)[None, :] >= src_len[:, None]
    emb = self.drop(self.tgt_embed(tgt_in))
    features = []
    for t in range(tgt_in.shape[1]):
      scores = self.v(torch.tanh(keys + self.w_query(h)[:, None, :])).squeeze(-1)
      weights = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)
      context = torch.bmm(weights[:, None, :], memory).squeeze(1)
      h = self.cell(torch.cat([emb[:, t], context], dim=-1), h)
      features.append(torch.cat([h, context, emb[:, t]], dim=-1))
    return self.out(self.drop(torch.stack(features, dim=1)))


class TransformerSeq2Seq(nn.Module):
  """Embeddings + sinusoidal positions + `nn.Transformer` (pre-norm) + output layer."""

  def __init__(self, src_vocab, tgt_vocab, d_model=256, heads=4, layers=2, d_ff=1024,
               dropout=0.1, max_len=1024):
    super().__init__()
    self.d_model = d_model
    self.src_embed = nn.Embedding(src_vocab, d_model)
    self.tgt_embed = nn.Embedding(tgt_vocab, d_model)
    pos = np.arange(max_len)[:, None] / np.power(10000.0, np.arange(0, d_model, 2) / d_model)
    table = np.zeros((max_len, d_model), np.float32)
    table[:, 0::2], table[:, 1::2] = np.sin(pos), np.cos(pos)
    self.register_buffer("positions", torch.from_numpy(table))
    self.transformer = nn.Transformer(d_model, heads, layers, layers, d_ff, dropout,
                                      batch_first=True, norm_first=True)
    self.out = nn.Linear(d_model, tgt_vocab)
    self.drop = nn.Dropout(dropout)

  def _embed(self, table, tokens):
    return self.drop(table(tokens) * math.sqrt(self.d_model) + self.positions[:tokens.shape[1]])

  def forward(self, src, src_len, tgt_in):
    src_pad = torch.arange(src.shape[1], device=src.device)[None, :] >= src_len[:, None]
    causal = nn.Transformer.generate_square_subsequent_mask(tgt_in.shape[1], device=src.device)
    y = self.transformer(self._embed(self.src_embed, src), self._embed(self.tgt_embed, tgt_in),
                         tgt_mask=causal, src_key_padding_mask=src_pad,
                         memory_key_padding_mask=src_pad, tgt_is_causal=True)
    return self.out(y)


def make_model(kind: str, src_vocab: int, tgt_vocab: int, sizes: dict, dropout: float):
  if kind == "gru_bahdanau":
    return GRUBahdanau(src_vocab, tgt_vocab, sizes["embed"], sizes["hidden"], sizes["layers"],
                       sizes["attn_dim"], dropout)
  if kind == "transformer":
    return TransformerSeq2Seq(src_vocab, tgt_vocab, sizes["d_model"], sizes["heads"],
                              sizes["layers"], sizes["d_ff"], dropout)
  raise ValueError(f"no PyTorch reference for {kind!r}")


def step_timer(kind: str, src_vocab: int, tgt_vocab: int, sizes: dict, dropout: float,
               batch: dict, threads: int):
  """Returns (step, num_params): step() runs one optimizer step on `batch`
  (NumPy arrays as made by our batcher) and returns the loss."""
  torch.manual_seed(0)
  torch.set_num_threads(threads)
  model = make_model(kind, src_vocab, tgt_vocab, sizes, dropout)
  model.train()
  opt = torch.optim.Adam(model.parameters(), lr=1e-3)
  src = torch.from_numpy(np.asarray(batch["src"], np.int64))
  src_len = torch.from_numpy(np.asarray(batch["src_len"], np.int64)).clamp(min=1)
  tgt_in = torch.from_numpy(np.asarray(batch["tgt_in"], np.int64))
  tgt_out = torch.from_numpy(np.asarray(batch["tgt_out"], np.int64))
  weights = torch.from_numpy(np.asarray(batch["weights"], np.float32))

  def step():
    opt.zero_grad(set_to_none=True)
    logits = model(src, src_len, tgt_in)
    losses = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                         tgt_out.reshape(-1), reduction="none")
    loss = (losses * weights.reshape(-1)).sum() / weights.sum().clamp(min=1.0)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return float(loss)

  return step, sum(p.numel() for p in model.parameters())
