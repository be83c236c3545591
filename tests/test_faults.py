"""Fault injection: training survives kills, signals, corrupt checkpoints,
non-finite steps and failing writes without losing work.

The kill and signal tests run the real `train.py` in a subprocess on the tiny
config; one uninterrupted run (a module fixture) is the reference they all
compare with. The rest run in-process.
"""

import copy
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from seq2seq_jax import trainer
from seq2seq_jax.checkpoints import Checkpoints
from seq2seq_jax.data import batching
from seq2seq_jax.errors import CheckpointError, DivergenceError
from seq2seq_jax.metric_writer import read_metrics
from tests import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Longer than the e2e default, with a checkpoint every 2 steps, so that a
# kill lands among several checkpoints; no periodic evaluation (it only costs
# time here: it does not change the parameters).
OVERRIDES = {"train.num_steps": 12, "train.checkpoint_every": 2, "train.log_every": 2,
             "train.eval_every": 1000, "eval.num_attention_plots": 0, "train.keep_checkpoints": 3}


def tiny(**more):
  config = tiny_config.get_config()
  for field, value in {**OVERRIDES, **more}.items():
    node = config
    *parents, last = field.split(".")
    for p in parents:
      node = node[p]
    node[last] = value
  return config


def train_py_args(workdir, **more):
  return [sys.executable, os.path.join(ROOT, "train.py"),
          "--config=" + os.path.join(ROOT, "tests", "tiny_config.py"), f"--workdir={workdir}",
          *(f"--config.{k}={v}" for k, v in {**OVERRIDES, **more}.items())]


def train_py(workdir, **more):
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.run(train_py_args(workdir, **more), cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)


def saved_state(workdir, step=None):
  """(params, opt_state, step) of a workdir's newest (or given) checkpoint."""
  from seq2seq_jax import training
  config = tiny()
  run = trainer.Run(copy.deepcopy(config), workdir)
  state = training.create_train_state(run.model, config.train, jax.random.key(0),
                                      trainer._model_batch(run.train_batches.batch_at(0)))
  ckpts = Checkpoints(run.ckpt_dir)
  try:
    state = ckpts.restore(state, step)
  finally:
    ckpts.close()
  return jax.device_get((state.params, state.opt_state, state.step))


def assert_same_state(a, b):
  assert int(a[2]) == int(b[2])
  for x, y in zip(jax.tree.leaves(a[:2]), jax.tree.leaves(b[:2])):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# --- non-finite steps (in-process: the batcher is patched) ----------------

def poison(monkeypatch, bad_steps):
  """Training batches of `bad_steps` (0-based) get a NaN weight: a real NaN
  loss and NaN gradients, from the data side."""
  original = batching.BucketBatcher.iterate

  def iterate(self, start_step=0):
    for step, batch in enumerate(original(self, start_step), start_step):
      if step in bad_steps:
        batch = dict(batch, weights=batch["weights"].copy())
        batch["weights"][0, 0] = np.nan
      yield batch

  monkeypatch.setattr(batching.BucketBatcher, "iterate", iterate)


def test_nonfinite_step_is_skipped_and_reported(tmp_path, monkeypatch, capsys):
  clean, bad = str(tmp_path / "clean"), str(tmp_path / "bad")
  trainer.train_and_evaluate(tiny(), clean, stop_after=2)
  poison(monkeypatch, {2})
  assert trainer.train_and_evaluate(tiny(), bad, stop_after=3) is None
  err = capsys.readouterr().err
  assert "warning: step 3: non-finite loss or gradients (loss nan" in err
  assert "update skipped" in err and "training examples [" in err
  # Steps 1-2 applied, step 3 skipped: the parameters and optimizer moments
  # are those after step 2 (the step counter moved on).
  a, b = saved_state(clean, 2), saved_state(bad, 3)
  assert int(b[2]) == 3
  for x, y in zip(jax.tree.leaves(a[0]), jax.tree.leaves(b[0])):
    np.testing.assert_array_equal(x, y)
  logged = {e["step"]: e for e in read_metrics(bad, "train")}
  assert logged[2]["nonfinite_steps"] == 0 and logged[3]["nonfinite_steps"] == 1
  assert np.isfinite(logged[3]["loss"])  # the skipped step is left out of the averages


def test_nonfinite_stop_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  workdir = str(tmp_path / "w")
  poison(monkeypatch, {5})
  with pytest.raises(DivergenceError, match=r"step 6: non-finite .* the last checkpoint is step 4"):
    trainer.train_and_evaluate(tiny(**{"train.nonfinite": "stop", "train.checkpoint_every": 4}),
                               workdir)
  assert Checkpoints(os.path.join(workdir, "checkpoints")).all_steps() == [4]
  params = saved_state(workdir)[0]
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))
