"""Fault injection: training survives kills, signals, corrupt checkpoints,
non-finite steps and failing writes without losing work.

The kill and signal tests run the real `train.py` in a subprocess on the tiny
config; one uninterrupted run (a module fixture) is the reference they all
compare with. The rest run in-process.
"""

import copy
import errno
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

import orbax.checkpoint as ocp

from seq2seq_jax import checkpoints, trainer
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


# --- kill -9, SIGTERM: the real command line --------------------------------

@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """One uninterrupted run: its final state and how long it took."""
  workdir = str(tmp_path_factory.mktemp("reference"))
  start = time.time()
  proc = train_py(workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return saved_state(workdir), time.time() - start


def start_train_py(workdir):
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.Popen(train_py_args(workdir), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def checkpoint_names(workdir) -> list:
  ckpt = os.path.join(workdir, "checkpoints")
  return os.listdir(ckpt) if os.path.isdir(ckpt) else []


def finish_and_compare(workdir, reference_state):
  proc = train_py(workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert_same_state(saved_state(workdir), reference_state)
  return proc


# Where the three kills of one workdir land: (what to wait for, extra seeded
# delay). Between them, training steps, asynchronous checkpoint writes and the
# final evaluation are all hit.
KILLS = [
    ("checkpoint 4 written", lambda names: "4" in names, 0.3),
    ("checkpoint >= 8 being written", lambda names: any(
        ".orbax-checkpoint-tmp" in n and int(n.split(".")[0]) >= 8 for n in names), 0.0),
    ("checkpoint 12 written (final evaluation)", lambda names: "12" in names, 0.2),
]


def test_kill_9_at_three_points_then_rerun_ends_like_an_uninterrupted_run(tmp_path, reference):
  reference_state, duration = reference
  workdir = str(tmp_path / "w")
  rng = random.Random(0)
  env = dict(os.environ, PYTHONPATH=ROOT)
  resumed_from = None
  for what, ready, delay in KILLS:
    proc = subprocess.Popen(train_py_args(workdir), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
      deadline = time.time() + 2 * duration + 60
      # A killed write's temporary directory is removed when the next run
      # starts; only a write of this run counts.
      leftovers = {n for n in checkpoint_names(workdir) if "tmp" in n}
      while leftovers & set(checkpoint_names(workdir)) and time.time() < deadline:
        time.sleep(0.002)
      while not ready(checkpoint_names(workdir)) and time.time() < deadline:
        assert proc.poll() is None, f"ended before {what}: {proc.stdout.read()[-2000:]}"
        time.sleep(0.002)
      time.sleep(rng.uniform(0.0, delay))
      proc.send_signal(signal.SIGKILL)
      out = proc.communicate()[0]
    finally:
      proc.kill()
      proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"{what}: the run ended before the kill"
    if resumed_from is not None:
      assert f"resuming from step {resumed_from}" in out
    steps = [int(n) for n in checkpoint_names(workdir) if n.isdigit()]
    resumed_from = max(steps)
    print(f"kill -9 at {what}: checkpoints on disk {sorted(steps)}")
  rerun = finish_and_compare(workdir, reference_state)
  assert f"resuming from step {resumed_from}" in rerun.stdout


def test_sigterm_checkpoints_and_exits_0_then_resumes_exactly(tmp_path, reference):
  reference_state, _ = reference
  workdir = str(tmp_path / "w")
  proc = start_train_py(workdir)
  try:
    for line in proc.stdout:  # the run prints this line just before its first step
      if "training from scratch" in line:
        break
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=600)
  finally:
    proc.kill()
    proc.wait()
  assert proc.returncode == 0, err[-3000:]
  assert "SIGTERM: stopped at step" in out and "run the same command again to resume" in out
  step = int(out.split("SIGTERM: stopped at step ")[1].split()[0])
  assert Checkpoints(os.path.join(workdir, "checkpoints")).latest_step() == step
  assert step < OVERRIDES["train.num_steps"]
  rerun = finish_and_compare(workdir, reference_state)
  assert f"resuming from step {step}" in rerun.stdout


def test_stop_signals_first_asks_second_kills():
  from seq2seq_jax import faults
  before = signal.getsignal(signal.SIGINT)
  with faults.StopSignals() as signals:
    os.kill(os.getpid(), signal.SIGTERM)
    assert signals.requested == "SIGTERM"
    # The default actions are back: a second signal ends the process at once.
    assert signal.getsignal(signal.SIGINT) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
  assert signal.getsignal(signal.SIGINT) == before


# --- damaged checkpoints (in-process) ---------------------------------------

@pytest.fixture(scope="module")
def six_steps(tmp_path_factory):
  """A workdir stopped after step 6, with checkpoints 2, 4 and 6."""
  workdir = str(tmp_path_factory.mktemp("six"))
  assert trainer.train_and_evaluate(tiny(), workdir, stop_after=6) is None
  assert Checkpoints(os.path.join(workdir, "checkpoints")).all_steps() == [2, 4, 6]
  return workdir


def damage(step_dir, how):
  state = os.path.join(step_dir, "state")
  if how == "truncated data file":
    data = os.path.join(state, "d")
    path = max((os.path.join(data, f) for f in os.listdir(data)), key=os.path.getsize)
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)
  elif how == "garbage manifest":
    with open(os.path.join(state, "manifest.ocdbt"), "wb") as f:
      f.write(os.urandom(256))
  elif how == "missing directory":
    shutil.rmtree(state)


@pytest.mark.parametrize("how", ["truncated data file", "garbage manifest", "missing directory"])
def test_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path, six_steps, reference,
                                                              capsys, how):
  workdir = str(tmp_path / "w")
  shutil.copytree(six_steps, workdir)
  damage(os.path.join(workdir, "checkpoints", "6"), how)
  trainer.train_and_evaluate(tiny(), workdir)
  err = capsys.readouterr().err
  assert "warning: checkpoint 6 in" in err and "resuming from checkpoint 4" in err
  assert os.path.isdir(os.path.join(workdir, "corrupt_checkpoints", "6"))  # kept for a look
  assert Checkpoints(os.path.join(workdir, "checkpoints")).all_steps() == [8, 10, 12]
  assert_same_state(saved_state(workdir), reference[0])


def test_no_readable_checkpoint_is_an_error_not_a_fresh_start(tmp_path, six_steps):
  workdir = str(tmp_path / "w")
  shutil.copytree(six_steps, workdir)
  for step in (2, 4, 6):
    damage(os.path.join(workdir, "checkpoints", str(step)), "garbage manifest")
  with pytest.raises(CheckpointError, match=r"no checkpoint in .* can be restored .*step 6: .*"
                                            r"step 4: .*step 2: "):
    trainer.train_and_evaluate(tiny(), workdir)
  assert Checkpoints(os.path.join(workdir, "checkpoints")).all_steps() == [2, 4, 6]


# --- a checkpoint directory that refuses writes (in-process) ----------------

def test_unwritable_checkpoint_directory_is_a_clear_error(tmp_path, six_steps):
  workdir = str(tmp_path / "w")
  shutil.copytree(six_steps, workdir)
  ckpt = os.path.join(workdir, "checkpoints")
  # root ignores permission bits; the immutable attribute stops even root.
  if os.geteuid() == 0:
    locked = subprocess.run(["chattr", "+i", ckpt], capture_output=True).returncode == 0
  else:
    os.chmod(ckpt, 0o555)
    locked = True
  if not locked:
    pytest.skip("cannot make a directory unwritable here (root without chattr +i)")
  try:
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint 8 to .*the earlier "
                                              r"checkpoints \(2, 4, 6\) are intact"):
      trainer.train_and_evaluate(tiny(), workdir)
  finally:
    if os.geteuid() == 0:
      subprocess.run(["chattr", "-i", ckpt], check=True)
    else:
      os.chmod(ckpt, 0o755)
  assert Checkpoints(ckpt).all_steps() == [2, 4, 6]
  assert int(saved_state(workdir)[2]) == 6


@pytest.mark.parametrize("where", ["write probe", "orbax write"])
def test_disk_full_while_saving_is_a_clear_error_then_resumes_exactly(
    tmp_path, six_steps, reference, monkeypatch, where):
  """ENOSPC at the next save: caught by our write probe (before Orbax starts)
  or raised by Orbax's own save. Either way one clear error, the earlier
  checkpoints untouched, and once there is space again the same command
  resumes and ends exactly like an uninterrupted run."""
  workdir = str(tmp_path / "w")
  shutil.copytree(six_steps, workdir)
  ckpt = os.path.join(workdir, "checkpoints")

  def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  if where == "write probe":
    monkeypatch.setattr(checkpoints.os, "fsync", disk_full)
  else:
    monkeypatch.setattr(ocp.CheckpointManager, "save", disk_full)
  with pytest.raises(CheckpointError, match=r"cannot write checkpoint 8 to .*No space left on "
                                            r"device.*the earlier checkpoints \(2, 4, 6\) are "
                                            r"intact"):
    trainer.train_and_evaluate(tiny(), workdir)
  monkeypatch.undo()
  assert Checkpoints(ckpt).all_steps() == [2, 4, 6]
  assert not [n for n in os.listdir(ckpt) if n.startswith(".write_probe")]  # no litter
  trainer.train_and_evaluate(tiny(), workdir)  # space freed: the same command resumes
  assert Checkpoints(ckpt).all_steps() == [8, 10, 12]
  assert_same_state(saved_state(workdir), reference[0])


def test_resume_allows_changes_that_leave_the_model_alone(tmp_path, six_steps):
  workdir = str(tmp_path / "w")
  shutil.copytree(six_steps, workdir)
  changed = tiny(**{"train.num_steps": 8, "train.eval_every": 7, "train.log_every": 1,
                    "train.checkpoint_every": 3, "train.progress_bar": True,
                    "eval.num_samples": 1})
  assert trainer.train_and_evaluate(changed, workdir) is not None
  assert Checkpoints(os.path.join(workdir, "checkpoints")).latest_step() == 8
  assert [e["step"] for e in read_metrics(workdir, "valid")][-1] == 8
