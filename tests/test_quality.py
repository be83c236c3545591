"""Quality: `train.py` must still *learn*. Each test trains a small model
through the real command line on data the package ships and asserts a
held-out score that an untrained or broken model cannot reach.

The thresholds leave a margin below what the runs reach on a 2-core CPU
(stated beside each), so float nondeterminism across machines does not trip
them; a model that stops learning (a broken loss mask, a swapped gate, a
detached gradient) misses them by far.
"""

import os
import subprocess
import sys

import pytest

from seq2seq_jax.metric_writer import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.slow


def train(workdir: str, config: str, *overrides: str) -> dict:
  """Runs train.py; returns the final test record of metrics.jsonl."""
  env = dict(os.environ, PYTHONPATH=ROOT)
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, "train.py"), f"--config={os.path.join(ROOT, config)}",
       f"--workdir={workdir}", "--config.train.progress_bar=False",
       "--config.eval.num_attention_plots=0", *overrides],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  (test,) = read_metrics(workdir, "test")
  return test


# The built-in date task, held-out split cut to 500 dates to keep evaluation
# short; training data and steps as in the config.
SMALL_EVAL = ("--config.data.num_valid=200", "--config.data.num_test=500")


def test_default_gru_with_attention_learns_dates(tmp_path):
  """configs/default.py (GRU 64 + Bahdanau, 400 steps) reaches about 99 %
  test exact match; it must reach 95 %."""
  test = train(str(tmp_path), "configs/default.py", *SMALL_EVAL)
  assert test["decoded_examples"] == 500
  assert test["exact_match"] >= 0.95, test


def test_small_transformer_learns_dates(tmp_path):
  """A 2+2-layer Transformer of width 64, 600 steps: about 99 % test exact
  match; it must reach 90 %."""
  test = train(str(tmp_path), "configs/default.py", *SMALL_EVAL,
               "--config.model.name=transformer", "--config.model.transformer.d_model=64",
               "--config.model.transformer.d_ff=256", "--config.model.transformer.num_layers=2",
               "--config.train.num_steps=600", "--config.train.learning_rate=3e-3",
               "--config.train.warmup_steps=100", "--config.train.eval_every=600",
               "--config.train.checkpoint_every=600")
  assert test["decoded_examples"] == 500
  assert test["exact_match"] >= 0.90, test


def test_g2p_smoke_run_gets_most_cmudict_test_words_right(tmp_path):
  """300 steps of a small G2P GRU on CMUdict (stress stripped), greedy
  decoding of the whole fixed test split: about 53 % WER; it must stay
  under 65 % (an untrained model is at 100 %)."""
  test = train(str(tmp_path), "configs/g2p_bahdanau.py",
               "--config.model.encoder.hidden=64", "--config.model.encoder.num_layers=1",
               "--config.model.decoder.hidden=128", "--config.model.attention.dim=64",
               "--config.model.dropout=0.0", "--config.train.batch_size=128",
               "--config.train.num_steps=300", "--config.train.warmup_steps=30",
               "--config.train.learning_rate=1e-2", "--config.train.eval_every=300",
               "--config.train.checkpoint_every=300", "--config.eval.beam_size=1",
               "--config.eval.num_decode_examples=500",
               "--config.data.src_boundaries=12,32", "--config.data.tgt_boundaries=12,32")
  assert test["decoded_examples"] > 6000  # the whole test split
  assert test["wer"] < 0.65, test
  assert test["per"] < 0.25, test
