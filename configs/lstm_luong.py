"""Luong et al. 2015: stacked LSTM encoder and decoder, the current decoder
state as the query, "general" (bilinear) score, attentional hidden state
tanh(W_c[c; h]) to the output, and input feeding.

Run:
  python train.py --config=configs/lstm_luong.py --workdir=runs/lstm_luong
"""

from configs import default


def get_config():
  config = default.reference_config()
  config.model.encoder.cell = "lstm"
  config.model.decoder.cell = "lstm"
  config.model.decoder.num_layers = 2  # Stacked like the encoder, as in the paper.
  config.model.decoder.type = "luong"
  config.model.decoder.input_feeding = True  # h~_{t-1} joins the next input.
  config.model.attention.score = "general"  # q . W k
  return config
