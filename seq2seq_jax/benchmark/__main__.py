"""`python -m seq2seq_jax.benchmark`: flags -> Options -> run (see the package docstring)."""

import shlex
import sys

from seq2seq_jax import host
from seq2seq_jax.benchmark.command_line import define_flags, options_from_flags
from seq2seq_jax.benchmark.options import validate
from seq2seq_jax.benchmark.runner import run
from seq2seq_jax.cli import fail, parse_flags_or_exit
from seq2seq_jax.errors import UserError


def main(argv):
  from absl import flags  # noqa: PLC0415
  from absl import logging as absl_logging  # noqa: PLC0415
  absl_logging.set_verbosity(absl_logging.WARNING)
  if len(argv) > 1:
    fail(f"unexpected arguments {argv[1:]}")
  host.configure()  # before JAX's first computation
  command = shlex.join(["python", "-m", "seq2seq_jax.benchmark"] + sys.argv[1:])
  try:
    options = options_from_flags(flags.FLAGS)
    options = options.resolved()
    validate(options)  # before any measurement: a typo costs no time
    run(options, command=command)
  except UserError as e:
    fail(str(e))


if __name__ == "__main__":
  from absl import app

  define_flags()
  app.run(main, flags_parser=parse_flags_or_exit)
