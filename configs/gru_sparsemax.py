"""The default GRU + Bahdanau model with sparsemax attention (Martins &
Astudillo 2016): weights are a sparse distribution, most source characters
get exactly zero.

Run:
  python train.py --config=configs/gru_sparsemax.py --workdir=runs/gru_sparsemax
"""

from configs import default


def get_config():
  config = default.reference_config()
  config.model.attention.normalize = "sparsemax"  # Euclidean projection onto the simplex.
  return config
