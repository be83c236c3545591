"""PyTorch twins of the benchmark's models, for `seq2seq_jax.benchmark --with_torch`.

Written the way PyTorch users write seq2seq (eager mode; recurrent encoders
over packed sequences, a Python loop over target steps in the attention
decoders, `nn.Transformer`), so the benchmark answers "how much faster is
this than the code people learn from". Each computes the same function as
our model of the same name and sizes, and trains it the same way: masked
cross-entropy, global-norm clipping to 1, Adam. The recurrent twins are in
`torch_rnn_twins`; the Transformer's is here.

Nothing in the package imports these modules except the benchmark, and only
when asked to: PyTorch stays optional.
"""

import math
import warnings

import numpy as np
import torch
from torch import nn

from seq2seq_jax.benchmark import torch_rnn_twins


class TransformerSeq2Seq(nn.Module):
  """Embeddings + sinusoidal positions + `nn.Transformer` + output layer.

  Like ours: embeddings scaled by sqrt(d_model), dropout on embeddings, on
  each sublayer's output and inside the feed-forward layer, none on the
  attention weights (ours has attention_dropout 0; nn.Transformer's
  attention modules are told so), LayerNorm's epsilon 1e-6 (Flax's), final
  LayerNorms with pre-LN (which nn.Transformer always has)."""

  def __init__(self, src_vocab, tgt_vocab, d_model=256, heads=4, layers=2, d_ff=1024,
               dropout=0.1, norm_first=True, max_len=1024):
    super().__init__()
    self.d_model = d_model
    self.src_embed = nn.Embedding(src_vocab, d_model)
    self.tgt_embed = nn.Embedding(tgt_vocab, d_model)
    pos = np.arange(max_len)[:, None] / np.power(10000.0, np.arange(0, d_model, 2) / d_model)
    table = np.zeros((max_len, d_model), np.float32)
    table[:, 0::2], table[:, 1::2] = np.sin(pos), np.cos(pos)
    self.register_buffer("positions", torch.from_numpy(table))
    with warnings.catch_warnings():
      # Its advice on nested tensors, which pre-LN layers cannot use: harmless.
      warnings.filterwarnings("ignore", message="enable_nested_tensor is True")
      self.transformer = nn.Transformer(d_model, heads, layers, layers, d_ff, dropout,
                                        layer_norm_eps=1e-6, batch_first=True,
                                        norm_first=norm_first)
    for module in self.transformer.modules():
      if isinstance(module, nn.MultiheadAttention):
        module.dropout = 0.0  # read at every call: no dropout on attention weights
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


def _recurrent(model: str):
  """"gru_bahdanau" -> ("gru", "bahdanau")."""
  cell, decoder = model.split("_")
  return cell, decoder


def make_model(model: str, sizes: dict):
  """The twin of benchmark.build_model(model, sizes). sizes: benchmark.Sizes
  as a dict, plus "norm_first" for the Transformer (our model's norm)."""
  s = sizes
  if model == "transformer":
    return TransformerSeq2Seq(s["src_vocab"], s["tgt_vocab"], s["d_model"], s["heads"],
                              s["transformer_layers"], s["d_ff"], s["dropout"],
                              s["norm_first"])
  return torch_rnn_twins.make_model(*_recurrent(model), s)


def describe(model: str, sizes: dict) -> str:
  """One line: the PyTorch modules the twin of `model` uses, and its loop."""
  s = sizes
  if model == "transformer":
    norm = "pre-LN, norm_first=True" if s["norm_first"] else "post-LN"
    return (f"nn.Embedding x sqrt(d) + sinusoidal positions, nn.Transformer (d_model "
            f"{s['d_model']}, {s['heads']} heads, {s['transformer_layers']}+"
            f"{s['transformer_layers']} layers, FFN {s['d_ff']}, {norm}, dropout "
            f"{s['dropout']:g}, attention-weight dropout 0) with padding and causal masks, "
            "nn.Linear output; all target positions at once")
  return torch_rnn_twins.describe(*_recurrent(model), s)


def extra_params(model: str, sizes: dict) -> int:
  """How many more parameters the twin has than our model: nn.RNN's and
  nn.LSTM's second bias per gate, in every encoder and decoder layer."""
  if model == "transformer":
    return 0
  cell, _ = _recurrent(model)
  return torch_rnn_twins.extra_params(cell, sizes["hidden"],
                                      sizes["layers"] + sizes["decoder_layers"])


def step_timer(model: str, sizes: dict, batch: dict, threads: int):
  """Returns (step, num_params): step() runs one optimizer step of the twin
  on `batch` (NumPy arrays as made by our batcher) and returns the loss as a
  Python float, which waits for the step to finish."""
  torch.manual_seed(0)
  torch.set_num_threads(threads)
  net = make_model(model, sizes)
  net.train()
  opt = torch.optim.Adam(net.parameters(), lr=1e-3)
  src = torch.from_numpy(np.asarray(batch["src"], np.int64))
  src_len = torch.from_numpy(np.asarray(batch["src_len"], np.int64)).clamp(min=1)
  tgt_in = torch.from_numpy(np.asarray(batch["tgt_in"], np.int64))
  tgt_out = torch.from_numpy(np.asarray(batch["tgt_out"], np.int64))
  weights = torch.from_numpy(np.asarray(batch["weights"], np.float32))

  def step():
    opt.zero_grad(set_to_none=True)
    logits = net(src, src_len, tgt_in)
    losses = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                         tgt_out.reshape(-1), reduction="none")
    loss = (losses * weights.reshape(-1)).sum() / weights.sum().clamp(min=1.0)
    loss.backward()
    nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    opt.step()
    return loss.item()  # float(loss) would warn: it requires grad

  return step, sum(p.numel() for p in net.parameters())
