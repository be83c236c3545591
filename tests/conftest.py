"""Shared test setup.

* The repo root goes on sys.path (for `configs` and `tests`).
* The process is set up as `train.py` sets itself up (`host.configure()`,
  before any JAX computation), so in-process runs and `train.py`
  subprocesses compute the same bits (an exact resume may mix the two).
* JAX's persistent compilation cache is pointed at one directory for the
  whole session (subprocesses of `train.py` inherit it through the
  environment), so the same tiny model is compiled once, not once per run.
  It changes no result: a cache hit is the same executable.
"""

import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from seq2seq_jax import host  # noqa: E402

host.configure()

os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "seq2seq_jax_test_xla_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def pytest_configure(config):
  # Slow tests run by default (CI runs them); `-m "not slow"` skips them
  # for a quick local pass.
  config.addinivalue_line(
      "markers", "slow: a minute or more on a 2-core CPU (compiles in several fresh "
      "processes); deselect with -m 'not slow'")
