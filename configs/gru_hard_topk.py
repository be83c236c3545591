"""The default GRU + Bahdanau model with hard top-k attention: only the k
best-scoring source characters get weight (softmax renormalized over them),
trained with the straight-through estimator.

Run:
  python train.py --config=configs/gru_hard_topk.py --workdir=runs/gru_hard_topk
"""

from configs import default


def get_config():
  config = default.reference_config()
  config.model.attention.normalize = "topk"  # Exact zeros outside the top k.
  config.model.attention.topk = 2  # Date fields span 1 to 4 characters; k=1 is argmax attention.
  return config
