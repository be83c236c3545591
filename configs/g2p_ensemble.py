"""Grapheme-to-phoneme on the CMU Pronouncing Dictionary with an ensemble of
two `g2p_bahdanau` models trained in one run and decoded together.

Each member is the bidirectional-GRU encoder + Bahdanau-attention GRU
decoder of configs/g2p_bahdanau.py with dropout 0.1 (0.2 there); the two
differ only in their initialization and dropout masks and see the same
batches (config.model.ensemble_size, seq2seq_jax/models/ensemble.py). Beam
search runs over the members' mean log-probabilities. A step
costs a little under two single-model steps; 7,000 of them (g2p_bahdanau
takes 6,000) ran in 2.25x g2p_bahdanau's wall time (2026-12-07).

Alone on a 2-vCPU AMD EPYC from an empty compilation cache (2026-12-08):
25 minutes, test WER 23.92 %, PER 5.53 % (beam 4); greedy 24.08 %.

Stress stripped; configs/g2p_ensemble_stress.py is the sibling that predicts
AH0/AH1/AH2. Results and timings: docs/results.md, "Grapheme-to-phoneme on CMUdict".
  python train.py --config=configs/g2p_ensemble.py --workdir=runs/g2p_ensemble
  python -m seq2seq_jax.evaluate --workdir=runs/g2p_ensemble --beam_sizes=1,4
"""

from configs import g2p_bahdanau


def get_config():
  config = g2p_bahdanau.get_config()
  config.model.ensemble_size = 2
  config.model.dropout = 0.1
  config.train.num_steps = 7_000
  config.train.eval_every = 1_750
  return config
