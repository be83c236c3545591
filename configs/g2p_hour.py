"""Grapheme-to-phoneme on CMUdict within an hour on 2 CPU cores:
`configs/g2p_bahdanau.py` trained for 11,000 steps instead of 6,000 (23
epochs), evaluated with an exponential moving average of its parameters.

The model is the same (bidirectional 2-layer GRU encoder, 192 per
direction; GRU decoder of 384 with additive attention; dropout 0.2). On
these CPUs the step is bound by compute, not by per-step overhead (a batch
of 512 takes twice as long as one of 256: the same tokens per second), so
the hour buys more passes over the data, not a wider model. The results,
machine and timings are in docs/results.md (Grapheme-to-phoneme on CMUdict).

  /usr/bin/time -v python train.py --config=configs/g2p_hour.py --workdir=runs/g2p_hour
  python -m seq2seq_jax.evaluate --workdir=runs/g2p_hour --beam_sizes=1,4
"""

from configs import g2p_bahdanau


def get_config():
  config = g2p_bahdanau.get_config()
  train = config.train
  train.num_steps = 11_000  # 23 epochs of the 121k training pairs
  train.ema_decay = 0.999  # evaluate (and save as `params`) the average of about the last 1,000 steps
  train.eval_every = 2_000
  train.checkpoint_every = 1_000
  return config
