"""Grapheme-to-phoneme on the CMU Pronouncing Dictionary with a Transformer
(3+3 layers, d_model 128, 4 heads, pre-LN, label smoothing 0.1), beam 4.

The width is set by this machine: at d_model 256 a step of 256 words took
1.25 s on 2 CPU cores (6,000 steps would be over two hours); at 128 it takes
0.52 s. Dropout is a third of the step time on a CPU (random bits for every
activation).

Same data, split and metrics as configs/g2p_bahdanau.py (see its docstring).

Run:
  python train.py --config=configs/g2p_transformer.py --workdir=runs/g2p_transformer
  python -m seq2seq_jax.evaluate --workdir=runs/g2p_transformer --beam_sizes=1,4
"""

from configs import g2p_bahdanau


def get_config():
  config = g2p_bahdanau.get_config()
  config.model.name = "transformer"
  config.model.embed_dim = 128  # unused by the Transformer (d_model sets the width)
  config.model.dropout = 0.1
  t = config.model.transformer
  t.num_layers = 3
  t.d_model = 128
  t.num_heads = 4
  t.d_ff = 512
  t.attention_dropout = 0.1
  t.norm = "pre"
  t.max_len = 64
  # The GRU config's schedule (cosine to 2 % of the peak), with a lower peak
  # and a longer warmup for the Transformer.
  config.train.learning_rate = 2e-3
  config.train.warmup_steps = 600
  config.train.decay = "cosine"
  config.train.end_lr_factor = 0.02
  config.train.label_smoothing = 0.1
  return config
