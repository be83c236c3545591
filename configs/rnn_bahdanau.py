"""Vanilla (tanh) RNN encoder and decoder with Bahdanau attention: the
baseline that shows what gating buys.

Run:
  python train.py --config=configs/rnn_bahdanau.py --workdir=runs/rnn_bahdanau
"""

from configs import default


def get_config():
  config = default.reference_config()
  config.model.encoder.cell = "rnn"  # h' = tanh(x W + h U + b): no gates.
  config.model.decoder.cell = "rnn"
  config.train.learning_rate = 1e-3  # Ungated recurrences are less stable at 3e-3.
  return config
