"""The reference model (`configs.default.reference_config`): 2-layer GRU
encoder and GRU decoder of 256 units with Bahdanau attention, dropout 0.1,
1,000 steps. The README's comparison tables were measured with it.

Run:
  python train.py --config=configs/reference.py --workdir=runs/reference
"""

from configs import default


def get_config():
  return default.reference_config()
