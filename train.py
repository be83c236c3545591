"""Trains and evaluates a model: `python train.py --config=configs/default.py`.

Everything is in the config; this file only parses flags and calls
`seq2seq_jax.trainer.train_and_evaluate`. A mistake a user can make (unknown
flag or config field, bad config value, missing or malformed data,
incompatible checkpoint) is printed as one line and exits with status 2.
"""

import os

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from seq2seq_jax.cli import fail
from seq2seq_jax.errors import UserError

FLAGS = flags.FLAGS


def _no_such_field(error: Exception):
  name = str(error).strip("\"'")
  fail(f"no config field {name!r}: each --config.<field> must name a field of the "
        "config file (all fields are listed in README.md)")


try:
  # ml_collections turns --config.a.b=v overrides into flags right here, so an
  # override naming no field fails at definition time.
  config_flags.DEFINE_config_file(
      "config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "default.py"),
      "Config file (a get_config() module); override "
      "fields with --config.a.b=value.", lock_config=True)
except (AttributeError, KeyError) as e:
  _no_such_field(e)
flags.DEFINE_string("workdir", "runs/default", "Directory for checkpoints, metrics, "
                    "plots and samples; rerunning on it resumes.")
# $XDG_CACHE_HOME (the freedesktop rule for caches), else ~/.cache.
_CACHE_HOME = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
flags.DEFINE_string("compilation_cache", os.path.join(_CACHE_HOME, "seq2seq_jax", "xla"),
                    "JAX's persistent compilation cache: a run loads the compiled programs "
                    "of earlier runs with the same shapes instead of compiling them again "
                    "(the same executables, so the same results). \"\" turns it off; "
                    "the JAX_COMPILATION_CACHE_DIR environment variable, when set, wins.")


def _parse_flags_or_exit(argv):
  """app.run's flag parser, with mistakes as one line and exit 2."""
  try:
    remaining = FLAGS(argv)
    FLAGS.config.keys()  # the config file is loaded lazily: load it now
  except flags.Error as e:
    fail(str(e))
  except (AttributeError, KeyError) as e:
    _no_such_field(e)
  except Exception as e:  # noqa: BLE001  (a missing or broken config file)
    fail(f"cannot load the --config file: {str(e).strip().splitlines()[-1].strip()}")
  return remaining


def _enable_compilation_cache(path: str):
  """Points JAX's persistent compilation cache at `path` (unless the
  environment already chose one), caching every compile that takes 0.5 s or
  more; an unusable directory only costs the cache, never the run."""
  if os.environ.get("JAX_COMPILATION_CACHE_DIR") or not path:
    return
  path = os.path.expanduser(path)
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    absl_logging.warning("compilation cache off: cannot create %s (%s)", path, e)
    return
  import jax  # pylint: disable=import-outside-toplevel
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def main(argv):
  if len(argv) > 1:
    fail(f"unexpected arguments {argv[1:]} (settings go in --config.<field>=<value>)")
  if not FLAGS["verbosity"].present:
    # Quiet by default (warnings, the progress bar, results); -v 0 for info logs.
    absl_logging.set_verbosity(absl_logging.WARNING)
  from seq2seq_jax import host  # pylint: disable=import-outside-toplevel
  host.configure()  # before JAX's first computation
  _enable_compilation_cache(FLAGS.compilation_cache)
  from seq2seq_jax import trainer  # after flag parsing: importing JAX is slow
  try:
    trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except UserError as e:
    fail(str(e))


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags_or_exit)
