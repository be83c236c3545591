"""`python -m seq2seq_jax.benchmark`: flags -> Options -> run (see the package docstring)."""

import shlex
import sys

from seq2seq_jax.benchmark.command_line import define_flags, options_from_flags
from seq2seq_jax.benchmark.options import validate
from seq2seq_jax.benchmark.runner import run
from seq2seq_jax.errors import UserError


def _fail(message: str):
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def _parse_flags_or_exit(argv):
  """absl's flag parser, with a mistake as one line and exit status 2."""
  from absl import flags  # noqa: PLC0415
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(str(e))


def main(argv):
  from absl import flags  # noqa: PLC0415
  from absl import logging as absl_logging  # noqa: PLC0415
  absl_logging.set_verbosity(absl_logging.WARNING)
  if len(argv) > 1:
    _fail(f"unexpected arguments {argv[1:]}")
  command = shlex.join(["python", "-m", "seq2seq_jax.benchmark"] + sys.argv[1:])
  try:
    options = options_from_flags(flags.FLAGS)
    options = options.resolved()
    validate(options)  # before any measurement: a typo costs no time
    run(options, command=command)
  except UserError as e:
    _fail(str(e))


if __name__ == "__main__":
  from absl import app

  define_flags()
  app.run(main, flags_parser=_parse_flags_or_exit)
