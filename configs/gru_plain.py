"""GRU encoder-decoder without attention (Cho et al. 2014; Sutskever et al.
2014): the decoder sees only the encoder's final state, fed at every step.

Run:
  python train.py --config=configs/gru_plain.py --workdir=runs/gru_plain
"""

from configs import default


def get_config():
  config = default.reference_config()
  config.model.decoder.type = "plain"  # One fixed context vector instead of attention.
  config.model.encoder.bidirectional = True  # Both ends of the source reach the final state.
  return config
