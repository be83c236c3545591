"""LSTM encoder and decoder with Bahdanau (additive) attention.

Run:
  python train.py --config=configs/lstm_bahdanau.py --workdir=runs/lstm_bahdanau
"""

from configs import default


def get_config():
  config = default.reference_config()
  config.model.encoder.cell = "lstm"  # (c, h) carries; forget-gate bias starts at 1.
  config.model.decoder.cell = "lstm"
  config.model.encoder.bidirectional = True  # As in Bahdanau et al. 2015.
  config.model.encoder.num_layers = 1  # One bidirectional layer, as in the paper.
  return config
