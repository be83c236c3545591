"""Grapheme-to-phoneme on the CMU Pronouncing Dictionary with a Transformer
(3+3 layers, d_model 256, 4 heads, pre-LN, label smoothing 0.1), beam 4.

Same data, split and metrics as configs/g2p_bahdanau.py (see its docstring).

Run:
  python train.py --config=configs/g2p_transformer.py --workdir=runs/g2p_transformer
  python -m seq2seq_jax.evaluate --workdir=runs/g2p_transformer --beam_sizes=1,4
"""

from configs import g2p_bahdanau


def get_config():
  config = g2p_bahdanau.get_config()
  config.model.name = "transformer"
  config.model.embed_dim = 256  # unused by the Transformer (d_model sets the width)
  config.model.dropout = 0.1
  t = config.model.transformer
  t.num_layers = 3
  t.d_model = 256
  t.num_heads = 4
  t.d_ff = 1024
  t.attention_dropout = 0.1
  t.norm = "pre"
  t.max_len = 64
  config.train.learning_rate = 1e-3
  config.train.warmup_steps = 800
  config.train.decay = "rsqrt"
  config.train.label_smoothing = 0.1
  return config
