"""PyTorch twins of the recurrent models (`benchmark.RNN_MODELS`).

Written the way PyTorch users write seq2seq (the official tutorial, d2l,
course code): the encoder is one `nn.GRU`/`nn.LSTM`/`nn.RNN` over a
`pack_padded_sequence`, the plain decoder is one more such module run over
the whole teacher-forced target (its input never depends on its output), and
the attention decoders are a Python loop over target steps through a stack
of `nn.GRUCell`/`nn.LSTMCell`/`nn.RNNCell`. Each computes the same function
as our `RNNSeq2Seq` of the same sizes (see `benchmark.build_model`):

* encoder: embedding dropout, stacked layers with dropout between them,
  masked by the source lengths; the decoder starts from tanh(W s + b) of the
  encoder's final top-layer state, one per decoder layer (an LSTM: for its
  c and for its h);
* plain: the final state s is the context, joined to every input [e; s],
  readout over [h; s; e];
* bahdanau: additive score v . tanh(W_q q + W_k k + b) with the previous
  top-layer state as the query, keys projected once, masked softmax, the
  context joins the input [e; c], readout over [h; c; e];
* luong: input feeding [e; h~_{t-1}], the current top state scores the
  memory with the general score q . W k, h~ = tanh(W_c [c; h]) without bias
  is the readout's input;
* dropout between stacked decoder layers and before the readout.

nn.RNN and nn.LSTM keep two biases per gate (`bias_ih`, `bias_hh`) where our
cells keep one, their sum being all the function sees: `extra_params`
counts the difference. (A GRU's second bias sits inside the reset gate's
product; both implementations have it.)
"""

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

LAYERS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
CELLS = {"rnn": nn.RNNCell, "gru": nn.GRUCell, "lstm": nn.LSTMCell}
GATES = {"rnn": 1, "gru": 3, "lstm": 4}


def extra_params(cell: str, hidden: int, layers: int) -> int:
  """Parameters a PyTorch recurrent stack of `layers` layers has beyond
  ours: the redundant second bias of nn.RNN and nn.LSTM (0 for nn.GRU)."""
  return 0 if cell == "gru" else GATES[cell] * hidden * layers


def _stacked(cell: str, in_features: int, hidden: int, layers: int, dropout: float):
  """nn.GRU/LSTM/RNN with dropout between its layers (PyTorch warns about
  a dropout it cannot apply, so a single layer gets none)."""
  return LAYERS[cell](in_features, hidden, num_layers=layers, batch_first=True,
                      dropout=dropout if layers > 1 else 0.0)


class Encoder(nn.Module):
  """Embedding + stacked recurrent layers over the packed source."""

  def __init__(self, cell, vocab, embed, hidden, layers, dropout):
    super().__init__()
    self.embed = nn.Embedding(vocab, embed)
    self.rnn = _stacked(cell, embed, hidden, layers, dropout)
    self.drop = nn.Dropout(dropout)

  def forward(self, src, src_len):
    """-> memory [batch, src_time, hidden] (zero on padding), final top-layer h."""
    x = self.drop(self.embed(src))
    packed = pack_padded_sequence(x, src_len.cpu(), batch_first=True, enforce_sorted=False)
    outputs, final = self.rnn(packed)
    memory, _ = pad_packed_sequence(outputs, batch_first=True, total_length=src.shape[1])
    h_n = final[0] if isinstance(final, tuple) else final  # an LSTM's is (h_n, c_n)
    return memory, h_n[-1]


class Bridge(nn.Module):
  """tanh(W s + b) of the encoder's final state, for each decoder layer's h
  (and an LSTM's c): one nn.Linear computing all of them at once."""

  def __init__(self, cell, hidden, layers):
    super().__init__()
    self.parts = 2 if cell == "lstm" else 1
    self.layers = layers
    self.proj = nn.Linear(hidden, self.parts * layers * hidden)

  def forward(self, final):
    """-> nn.GRU/nn.RNN's h_0 [layers, batch, hidden], or nn.LSTM's (h_0, c_0)."""
    states = torch.tanh(self.proj(final)).unflatten(-1, (self.parts, self.layers, -1))
    states = states.permute(1, 2, 0, 3)  # [parts, layers, batch, hidden]
    return (states[0], states[1]) if self.parts == 2 else states[0]


class CellStack(nn.Module):
  """Stacked nn.GRUCell/LSTMCell/RNNCell, one time step per call, with
  dropout between the layers."""

  def __init__(self, cell, in_features, hidden, layers, dropout):
    super().__init__()
    self.lstm = cell == "lstm"
    self.cells = nn.ModuleList(CELLS[cell](in_features if l == 0 else hidden, hidden)
                               for l in range(layers))
    self.drop = nn.Dropout(dropout)

  def initial(self, h_0):
    """The bridge's h_0 (or (h_0, c_0)) as a list of per-layer states."""
    return list(zip(*h_0)) if self.lstm else list(h_0)

  def top(self, states):
    """The top layer's h."""
    return states[-1][0] if self.lstm else states[-1]

  def forward(self, x, states):
    new = []
    for l, (cell, state) in enumerate(zip(self.cells, states)):
      if l > 0:
        x = self.drop(x)
      state = cell(x, state)
      new.append(state)
      x = state[0] if self.lstm else state
    return x, new


class _RNNSeq2Seq(nn.Module):
  """What every recurrent twin has: encoder, bridge, target embedding,
  readout, dropout."""

  def __init__(self, cell, src_vocab, tgt_vocab, embed, hidden, enc_layers, dec_layers,
               dropout, readout_features):
    super().__init__()
    self.encoder = Encoder(cell, src_vocab, embed, hidden, enc_layers, dropout)
    self.bridge = Bridge(cell, hidden, dec_layers)
    self.tgt_embed = nn.Embedding(tgt_vocab, embed)
    self.out = nn.Linear(readout_features, tgt_vocab)
    self.drop = nn.Dropout(dropout)

  def _start(self, src, src_len, tgt_in):
    """The encoder's outputs and final state, the mask of source padding,
    and the target embeddings (dropped out): what every decoder starts from."""
    memory, final = self.encoder(src, src_len)
    mask = torch.arange(src.shape[1], device=src.device)[None, :] >= src_len[:, None]
    return memory, final, mask, self.drop(self.tgt_embed(tgt_in))


class PlainSeq2Seq(_RNNSeq2Seq):
  """Cho et al. 2014: the encoder's final state is the context of every
  step; the decoder runs over the whole target in one call."""

  def __init__(self, cell, src_vocab, tgt_vocab, embed=64, hidden=256, enc_layers=2,
               dec_layers=2, dropout=0.1):
    super().__init__(cell, src_vocab, tgt_vocab, embed, hidden, enc_layers, dec_layers,
                     dropout, hidden + hidden + embed)
    self.decoder = _stacked(cell, embed + hidden, hidden, dec_layers, dropout)

  def forward(self, src, src_len, tgt_in):
    _, final, _, emb = self._start(src, src_len, tgt_in)
    context = final[:, None, :].expand(-1, tgt_in.shape[1], -1)
    h, _ = self.decoder(torch.cat([emb, context], dim=-1), self.bridge(final))
    return self.out(self.drop(torch.cat([h, context, emb], dim=-1)))


def _masked_softmax(scores, mask):
  return torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)


class BahdanauSeq2Seq(_RNNSeq2Seq):
  """Bahdanau et al. 2015, d2l style: each step attends with the previous
  top-layer state, then runs the cell stack on [e; c]."""

  def __init__(self, cell, src_vocab, tgt_vocab, embed=64, hidden=256, enc_layers=2,
               dec_layers=2, attn_dim=128, dropout=0.1):
    super().__init__(cell, src_vocab, tgt_vocab, embed, hidden, enc_layers, dec_layers,
                     dropout, hidden + hidden + embed)
    self.w_query = nn.Linear(hidden, attn_dim, bias=False)
    self.w_key = nn.Linear(hidden, attn_dim)
    self.v = nn.Linear(attn_dim, 1, bias=False)
    self.cells = CellStack(cell, embed + hidden, hidden, dec_layers, dropout)

  def forward(self, src, src_len, tgt_in):
    memory, final, mask, emb = self._start(src, src_len, tgt_in)
    states = self.cells.initial(self.bridge(final))
    keys = self.w_key(memory)  # once per sequence
    features = []
    for t in range(tgt_in.shape[1]):
      query = self.w_query(self.cells.top(states))
      scores = self.v(torch.tanh(keys + query[:, None, :])).squeeze(-1)
      context = torch.bmm(_masked_softmax(scores, mask)[:, None, :], memory).squeeze(1)
      h, states = self.cells(torch.cat([emb[:, t], context], dim=-1), states)
      features.append(torch.cat([h, context, emb[:, t]], dim=-1))
    return self.out(self.drop(torch.stack(features, dim=1)))


class LuongSeq2Seq(_RNNSeq2Seq):
  """Luong et al. 2015 with input feeding: the cell stack runs on
  [e; h~_{t-1}], then its new top state attends (general score)."""

  def __init__(self, cell, src_vocab, tgt_vocab, embed=64, hidden=256, enc_layers=2,
               dec_layers=2, dropout=0.1):
    super().__init__(cell, src_vocab, tgt_vocab, embed, hidden, enc_layers, dec_layers,
                     dropout, hidden)
    self.w_score = nn.Linear(hidden, hidden, bias=False)  # q . W k
    self.w_c = nn.Linear(hidden + hidden, hidden, bias=False)
    self.cells = CellStack(cell, embed + hidden, hidden, dec_layers, dropout)

  def forward(self, src, src_len, tgt_in):
    memory, final, mask, emb = self._start(src, src_len, tgt_in)
    states = self.cells.initial(self.bridge(final))
    keys = self.w_score(memory)  # once per sequence
    attentional = final.new_zeros(final.shape[0], self.w_c.out_features)
    features = []
    for t in range(tgt_in.shape[1]):
      h, states = self.cells(torch.cat([emb[:, t], attentional], dim=-1), states)
      scores = torch.bmm(keys, h[:, :, None]).squeeze(-1)
      context = torch.bmm(_masked_softmax(scores, mask)[:, None, :], memory).squeeze(1)
      attentional = torch.tanh(self.w_c(torch.cat([context, h], dim=-1)))
      features.append(attentional)
    return self.out(self.drop(torch.stack(features, dim=1)))


def make_model(cell: str, decoder: str, sizes: dict):
  """The twin of RNNSeq2Seq(cell, decoder) at `sizes` (benchmark.Sizes as a dict)."""
  s = sizes
  common = dict(embed=s["embed"], hidden=s["hidden"], enc_layers=s["layers"],
                dec_layers=s["decoder_layers"], dropout=s["dropout"])
  if decoder == "plain":
    return PlainSeq2Seq(cell, s["src_vocab"], s["tgt_vocab"], **common)
  if decoder == "bahdanau":
    return BahdanauSeq2Seq(cell, s["src_vocab"], s["tgt_vocab"],
                           attn_dim=s["attention_dim"], **common)
  if decoder == "luong":
    return LuongSeq2Seq(cell, s["src_vocab"], s["tgt_vocab"], **common)
  raise ValueError(f"no PyTorch twin for decoder {decoder!r}")


def describe(cell: str, decoder: str, sizes: dict) -> str:
  """One line: which PyTorch modules the twin uses, and how it loops."""
  s = sizes
  layer, step = LAYERS[cell].__name__, CELLS[cell].__name__
  encoder = (f"nn.Embedding + {s['layers']}-layer nn.{layer} encoder on "
             "pack_padded_sequence, tanh(nn.Linear) bridge to every decoder layer")
  if decoder == "plain":
    loop = (f"one {s['decoder_layers']}-layer nn.{layer} call over the whole target "
            "(context joined to every input), readout over [h; c; e]")
  elif decoder == "bahdanau":
    loop = (f"Python loop over target steps: additive attention (nn.Linear query/key, v) "
            f"on the previous top state, then a {s['decoder_layers']}-layer nn.{step} "
            "stack on [e; c], readout over [h; c; e]")
  else:
    loop = (f"Python loop over target steps: a {s['decoder_layers']}-layer nn.{step} "
            "stack on [e; h~] (input feeding), general score (nn.Linear, no bias) on its "
            "output, h~ = tanh(nn.Linear(no bias)[c; h]), readout over h~")
  return f"{encoder}; {loop}"
