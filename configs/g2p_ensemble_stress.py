"""configs/g2p_ensemble.py predicting stress marks (AH0/AH1/AH2): the
ensemble of two GRU + Bahdanau-attention models, same split and budget.

Alone on a 2-vCPU AMD EPYC from an empty compilation cache (2026-12-08):
24 minutes, test WER 29.21 %, PER 7.45 % (beam 4; greedy 29.67 %), over
the 29 % aimed at (28.91 % on 2026-12-07, with other dropout masks);
g2p-en's network on the same words 32.23 %, 10.11 %. Results:
docs/results.md.
  python train.py --config=configs/g2p_ensemble_stress.py --workdir=runs/g2p_ensemble_stress
"""

from configs import g2p_ensemble


def get_config():
  config = g2p_ensemble.get_config()
  config.data.cmudict_stress = True
  return config
