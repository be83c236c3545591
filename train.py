"""Trains and evaluates a model: `python train.py --config=configs/default.py`.

Everything is in the config; this file only parses flags and calls
`seq2seq_jax.trainer.train_and_evaluate`. A mistake a user can make (bad
config value, missing or malformed data, incompatible checkpoint) is printed
as one line and exits with status 2.
"""

import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from seq2seq_jax.errors import UserError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", "configs/default.py", "Config file (a get_config() module); override "
    "fields with --config.a.b=value.", lock_config=True)
flags.DEFINE_string("workdir", "runs/default", "Directory for checkpoints, metrics, "
                    "plots and samples; rerunning on it resumes.")


def main(argv):
  if len(argv) > 1:
    print(f"error: unexpected arguments {argv[1:]} (settings go in --config.*)", file=sys.stderr)
    sys.exit(2)
  if not FLAGS["verbosity"].present:
    # Quiet by default (warnings, the progress bar, results); -v 0 for info logs.
    absl_logging.set_verbosity(absl_logging.WARNING)
  from seq2seq_jax import trainer  # after flag parsing: importing JAX is slow
  try:
    trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
