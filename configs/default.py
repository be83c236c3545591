"""The default run: a small GRU encoder-decoder with Bahdanau attention on the
built-in date-normalization task (character level), tuned to reach 99 % test
exact match in as little wall time as possible on a 2-core CPU (README,
"The default run"). `reference_config()` is the larger model of the README's
attention, decoder and scheduled-sampling comparisons (`configs/reference.py`);
the other configs start from it. The fields, their defaults and what each
means are in `seq2seq_jax/config_defaults.py`.

Run:
  python train.py --config=configs/default.py --workdir=runs/default

Any field can be overridden from the command line, for example
  python train.py --config.train.num_steps=500 --config.model.encoder.cell=lstm
"""

from seq2seq_jax.config_defaults import get_config, reference_config  # noqa: F401
