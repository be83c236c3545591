"""Fault injection: training survives kills, signals, corrupt checkpoints,
non-finite steps and failing writes without losing work.

The kill and signal tests run the real `train.py` in a subprocess on the tiny
config; one uninterrupted run (a module fixture) is the reference they all
compare with. The rest run in-process.
"""

import builtins
import copy
import errno
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import orbax.checkpoint as ocp

from seq2seq_jax import checkpoints, config_schema, evaluation, inference, metric_writer, trainer
from seq2seq_jax.checkpoints import Checkpoints
from seq2seq_jax.data import pipeline
from seq2seq_jax.errors import CheckpointError, DivergenceError
from seq2seq_jax.metric_writer import MetricWriter, read_metrics
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


def fresh_state(workdir):
  """A freshly initialized state of the tiny model: the target of a restore."""
  from seq2seq_jax import training
  config = tiny()
  run = trainer.Run(copy.deepcopy(config), workdir)
  return training.create_train_state(run.model, config.train, jax.random.key(0),
                                     evaluation.model_batch(run.train_batches.batch_at(0)))


def saved_state(workdir, step=None):
  """(params, opt_state, step) of a workdir's newest (or given) checkpoint."""
  ckpts = Checkpoints(os.path.join(workdir, "checkpoints"))
  try:
    state = ckpts.restore(fresh_state(workdir), step)
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
  original = pipeline.Batches.iterate

  def iterate(self, start_step=0):
    for step, batch in enumerate(original(self, start_step), start_step):
      if step in bad_steps:
        batch = dict(batch, weights=batch["weights"].copy())
        batch["weights"][0, 0] = np.nan
      yield batch

  monkeypatch.setattr(pipeline.Batches, "iterate", iterate)


def test_nonfinite_step_is_skipped_and_reported(tmp_path, monkeypatch, capsys):
  clean, bad = str(tmp_path / "clean"), str(tmp_path / "bad")
  trainer.train_and_evaluate(tiny(), clean, stop_after=2)
  poison(monkeypatch, {2})
  assert trainer.train_and_evaluate(tiny(), bad, stop_after=3) is None
  err = capsys.readouterr().err
  assert "warning: step 3: non-finite loss or gradients (loss nan" in err
  assert "update skipped" in err and "training examples [" in err
  # Steps 1-2 applied, step 3 skipped: the parameters and the whole optimizer
  # state (Adam's count too) are those after step 2; only the step counter
  # moved on.
  a, b = saved_state(clean, 2), saved_state(bad, 3)
  assert int(b[2]) == 3
  assert_same_state((*a[:2], 3), b)
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
def reference_run(tmp_path_factory):
  """One uninterrupted run: its workdir and how long it took."""
  workdir = str(tmp_path_factory.mktemp("reference"))
  start = time.time()
  proc = train_py(workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir, time.time() - start


@pytest.fixture(scope="module")
def reference(reference_run):
  """The uninterrupted run's final state and how long it took."""
  workdir, duration = reference_run
  return saved_state(workdir), duration


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


def _steps_on_disk(names) -> list:
  """Checkpoint steps present, finished or being written."""
  return [int(n.split(".")[0]) for n in names if n.split(".")[0].isdigit()]


# Where the three kills of one workdir land: (what to wait for, extra seeded
# delay, what cuts the delay short). Between them, training steps,
# asynchronous checkpoint writes and the final evaluation are all hit. The
# first kill must leave the later points ahead: on a fast machine the tiny
# run can reach its last checkpoint within the delay, so a checkpoint of
# step 6 or later, started or done, ends the wait at once.
KILLS = [
    ("checkpoint 4 written", lambda names: "4" in names, 0.3,
     lambda names: max(_steps_on_disk(names), default=0) >= 6),
    ("checkpoint >= 8 being written", lambda names: any(
        ".orbax-checkpoint-tmp" in n and int(n.split(".")[0]) >= 8 for n in names), 0.0,
     lambda names: False),
    ("checkpoint 12 written (final evaluation)", lambda names: "12" in names, 0.2,
     lambda names: False),
]


def test_kill_9_at_three_points_then_rerun_ends_like_an_uninterrupted_run(tmp_path, reference):
  reference_state, duration = reference
  workdir = str(tmp_path / "w")
  rng = random.Random(0)
  env = dict(os.environ, PYTHONPATH=ROOT)
  resumed_from = None
  for what, ready, delay, cut_short in KILLS:
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
      wait_until = time.time() + rng.uniform(0.0, delay)
      while time.time() < wait_until and not cut_short(checkpoint_names(workdir)):
        time.sleep(0.001)
      proc.send_signal(signal.SIGKILL)
      out = proc.communicate()[0]
    finally:
      proc.kill()
      proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"{what}: the run ended before the kill"
    # The first run starts afresh; each later one resumes where the kill left it.
    assert (f"resuming from step {resumed_from}" if resumed_from is not None
            else "training from scratch") in out
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


# --- metrics of a resumed run (in-process) ----------------------------------

class Crash(Exception):
  """Stands for a kill at the point where it is raised."""


def tensorboard_points(workdir) -> list:
  """(tag, step) of every event TensorBoard shows: the event files in order,
  a session START at step s discarding the events before it at steps >= s."""
  from tensorboardX.proto import event_pb2
  directory = os.path.join(workdir, "tensorboard")
  points = []
  for name in sorted(os.listdir(directory)):
    with open(os.path.join(directory, name), "rb") as f:
      data = f.read()
    pos = 0
    while pos < len(data):  # TFRecords: length (8 bytes), its crc (4), data, crc (4)
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
      pos += 16 + length
      if event.session_log.status == event_pb2.SessionLog.START:
        points = [p for p in points if p[1] < event.step]
      points += [(v.tag, event.step) for v in event.summary.value]
  return points


def test_resume_after_a_log_past_the_last_checkpoint_logs_each_step_once(
    tmp_path, reference_run, monkeypatch):
  """Killed after logging step 8 and before checkpointing it: the rerun
  resumes from 6 and logs 8 again. Each (split, step) is in metrics.jsonl
  once, as in the uninterrupted run, and TensorBoard shows each point once."""
  workdir = str(tmp_path / "w")
  save = Checkpoints.save

  def save_or_die(self, state, meta):
    if int(jax.device_get(state.step)) == 8:
      raise Crash()
    save(self, state, meta)

  monkeypatch.setattr(Checkpoints, "save", save_or_die)
  with pytest.raises(Crash):
    trainer.train_and_evaluate(tiny(), workdir)
  monkeypatch.undo()
  assert Checkpoints(os.path.join(workdir, "checkpoints")).latest_step() == 6
  assert {"split": "train", "step": 8} in [
      {"split": e["split"], "step": e["step"]} for e in read_metrics(workdir)]
  trainer.train_and_evaluate(tiny(), workdir)

  logged = [(e["split"], e["step"]) for e in read_metrics(workdir)]
  uninterrupted = [(e["split"], e["step"]) for e in read_metrics(reference_run[0])]
  assert sorted(logged) == sorted(uninterrupted)
  assert len(set(logged)) == len(logged)
  shown = tensorboard_points(workdir)
  assert sorted(shown) == sorted(tensorboard_points(reference_run[0]))
  assert ("train/loss", 8) in shown and len(set(shown)) == len(shown)


def test_metric_writer_keeps_each_split_and_step_once(tmp_path):
  workdir = str(tmp_path)
  writer = MetricWriter(workdir, tensorboard=False)
  writer.write(0, "data", {"examples": 400})
  for step in (2, 4, 6):
    writer.write(step, "train", {"loss": float(step)})
  writer.write(4, "valid", {"bleu": 1.0})
  writer.close()
  with open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8") as f:
    f.write('{"step": 8, "split": "tr')  # a line torn by a kill
  writer = MetricWriter(workdir, tensorboard=False)
  writer.resume(4)  # steps 6 and 8 are redone
  writer.write(4, "data", {"examples": 400})  # the same report: not repeated
  writer.write(4, "valid", {"bleu": 2.0})  # again at a logged step: replaces it
  writer.write(6, "train", {"loss": 0.5})
  writer.close()
  assert read_metrics(workdir) == [
      {"step": 0, "split": "data", "examples": 400},
      {"step": 2, "split": "train", "loss": 2.0}, {"step": 4, "split": "train", "loss": 4.0},
      {"step": 4, "split": "valid", "bleu": 2.0}, {"step": 6, "split": "train", "loss": 0.5}]


def test_metrics_rewrite_cut_short_loses_nothing(tmp_path, monkeypatch):
  """A crash while metrics.jsonl is rewritten (before the rename) leaves the
  old file whole."""
  workdir = str(tmp_path)
  writer = MetricWriter(workdir, tensorboard=False)
  for step in (2, 4, 6):
    writer.write(step, "train", {"loss": float(step)})
  writer.close()
  path = os.path.join(workdir, "metrics.jsonl")
  with open(path, encoding="utf-8") as f:
    before = f.read()

  def crash(*args):
    raise Crash()

  monkeypatch.setattr(metric_writer, "os", os_with(replace=crash))
  writer = MetricWriter(workdir, tensorboard=False)
  with pytest.raises(Crash):
    writer.resume(2)
  with open(path, encoding="utf-8") as f:
    assert f.read() == before


def os_with(**overrides):
  """The `os` module with some functions replaced, to patch into one module
  (`monkeypatch.setattr(module, "os", os_with(...))`). Patching `os` itself
  would reach every thread of the process: TensorBoard's writer thread dies
  on a fake disk-full fsync, and the run then blocks on its full queue."""
  class PatchedOs:
    def __getattr__(self, name):
      return overrides[name] if name in overrides else getattr(os, name)
  return PatchedOs()


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


def test_an_unfinished_write_is_gone_before_the_directory_is_used(tmp_path, six_steps):
  """A kill -9 during a save leaves `8.orbax-checkpoint-tmp`. It is removed
  when the directory is opened, not later in the background, where it raced
  with this run's own write of step 8."""
  ckpt = os.path.join(str(tmp_path / "w"), "checkpoints")
  shutil.copytree(os.path.join(six_steps, "checkpoints"), ckpt)
  shutil.copytree(os.path.join(ckpt, "6"), os.path.join(ckpt, "8.orbax-checkpoint-tmp"))
  ckpts = Checkpoints(ckpt)
  try:
    assert sorted(os.listdir(ckpt)) == ["2", "4", "6"]
    assert ckpts.all_steps() == [2, 4, 6]
  finally:
    ckpts.close()


def test_no_readable_checkpoint_is_an_error_not_a_fresh_start(tmp_path, six_steps):
  workdir = str(tmp_path / "w")
  shutil.copytree(six_steps, workdir)
  for step in (2, 4, 6):
    damage(os.path.join(workdir, "checkpoints", str(step)), "garbage manifest")
  with pytest.raises(CheckpointError, match=r"no checkpoint in .* can be restored .*step 6: .*"
                                            r"step 4: .*step 2: "):
    trainer.train_and_evaluate(tiny(), workdir)
  assert Checkpoints(os.path.join(workdir, "checkpoints")).all_steps() == [2, 4, 6]


def listing(directory) -> dict:
  """Every file under `directory`: {relative path: (size, mtime)}."""
  out = {}
  for root, _, files in os.walk(directory):
    for name in files:
      path = os.path.join(root, name)
      out[os.path.relpath(path, directory)] = (os.path.getsize(path), os.stat(path).st_mtime_ns)
  return out


def _eio():
  return OSError(errno.EIO, os.strerror(errno.EIO))


def _tensorstore_eio():
  """EIO as it reaches us through Orbax: TensorStore's status, wrapped."""
  try:
    raise ValueError('FAILED_PRECONDITION: Error reading local file "x/d/0": '
                     "[OS error: Input/output error]")
  except ValueError as e:
    try:
      raise Exception("Encountered error while reading array index") from e  # noqa: TRY002
    except Exception as wrapped:  # noqa: BLE001
      return wrapped


@pytest.mark.parametrize("make_error", [_eio, MemoryError, KeyboardInterrupt, _tensorstore_eio])
def test_transient_restore_error_propagates_and_moves_nothing(tmp_path, six_steps, monkeypatch,
                                                              make_error):
  """An I/O error, memory or an interrupt while restoring says nothing about
  the checkpoint: it is raised as it is, and no checkpoint is moved."""
  workdir = str(tmp_path / "w")
  shutil.copytree(six_steps, workdir)
  ckpt = os.path.join(workdir, "checkpoints")
  before = listing(ckpt)
  error = make_error()
  original = ocp.CheckpointManager.restore

  def restore(self, step, *args, **kwargs):
    if step == 6 and "state" in kwargs.get("args", {}):  # not read_meta's meta
      raise error
    return original(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, "restore", restore)
  with pytest.raises(type(error)) as raised:
    trainer.train_and_evaluate(tiny(), workdir)
  assert raised.value is error
  assert listing(ckpt) == before
  assert not os.path.exists(os.path.join(workdir, "corrupt_checkpoints"))


def _chained(*links):
  """links[0] raised from links[1] raised from ...: the last is the root cause."""
  for outer, inner in zip(links, links[1:]):
    outer.__cause__ = inner
  return links[0]


@pytest.mark.parametrize("error,damage", [
    (ValueError('OUT_OF_RANGE: Error reading "d/0": Requested byte range [0, 11991) is not '
                "valid for value of size 5995"), True),
    (ValueError("DATA_LOSS: Error decoding manifest: Expected to start with hex bytes"), True),
    (ValueError('NOT_FOUND: Error reading "d/0" [OS error: No such file or directory]'), True),
    (_chained(Exception("Encountered error while reading array index"),
              ValueError("OUT_OF_RANGE: Requested byte range is not valid")), True),
    (KeyError('Item "state" was not found in the checkpoint'), True),
    (FileNotFoundError("Checkpoint at /w/checkpoints/7 not found."), True),
    (json.JSONDecodeError("Expecting value", "", 0), True),
    (OSError(errno.EIO, "Input/output error"), False),
    (OSError(errno.ENOSPC, "No space left on device"), False),
    (TimeoutError("timed out"), False),
    (MemoryError(), False),
    (KeyboardInterrupt(), False),
    (ValueError("UNAVAILABLE: connection reset"), False),
    (ValueError("RESOURCE_EXHAUSTED: out of memory [OS error: Cannot allocate memory]"), False),
    (_chained(Exception("Encountered error while reading array index"),
              ValueError("FAILED_PRECONDITION: [OS error: Input/output error]")), False),
    (_chained(RuntimeError("restore failed"), OSError(errno.EIO, "Input/output error")), False),
])
def test_only_evidence_of_damage_counts_as_damage(error, damage):
  assert checkpoints.is_damage(error) is damage


def test_processes_set_a_checkpoint_aside_only_when_all_agree():
  R, D, O = checkpoints.RESTORED, checkpoints.DAMAGED, checkpoints.OTHER
  assert checkpoints.agreed([R]) == R and checkpoints.agreed([R, R]) == R
  assert checkpoints.agreed([D]) == D and checkpoints.agreed([D, D, D]) == D
  for outcomes in ([O], [R, D], [D, R], [D, O], [O, R], [R, D, O]):
    assert checkpoints.agreed(outcomes) == O, outcomes


@pytest.mark.parametrize("damaged_here,other,moved", [
    (True, checkpoints.DAMAGED, True),     # both found it damaged: set aside, by process 0
    (True, checkpoints.RESTORED, False),   # the other read it: not damage, an error
    (True, checkpoints.OTHER, False),      # the other failed for another reason
    (False, checkpoints.DAMAGED, False),   # read here, damaged there
])
def test_two_processes_agree_before_a_checkpoint_moves(tmp_path, six_steps, monkeypatch,
                                                       damaged_here, other, moved):
  """Process 0 of two, with process 1's outcome faked: checkpoint 6 moves
  only when both found it damaged, and then before the barrier."""
  workdir = str(tmp_path / "w")
  shutil.copytree(six_steps, workdir)
  ckpt = os.path.join(workdir, "checkpoints")
  if damaged_here:
    damage(os.path.join(ckpt, "6"), "garbage manifest")
  before = listing(ckpt)
  exchanged, barriers = [], []

  def all_processes(mine):
    """Process 1 reports `other` about checkpoint 6, then restores 4."""
    exchanged.append(mine)
    return np.array([mine, other if len(exchanged) == 1 else checkpoints.RESTORED])

  monkeypatch.setattr(checkpoints, "_all_processes", all_processes)
  monkeypatch.setattr(checkpoints, "_barrier", lambda name: barriers.append(
      (name, sorted(os.listdir(ckpt)))))
  state = fresh_state(workdir)
  ckpts = Checkpoints(ckpt)
  try:
    if moved:
      assert int(ckpts.restore(state).step) == 4
    else:
      with pytest.raises(CheckpointError, match=r"checkpoint 6 in .*: processes .*nothing was "
                                                r"moved"):
        ckpts.restore(state)
  finally:
    ckpts.close()
  assert os.path.isdir(os.path.join(workdir, "corrupt_checkpoints", "6")) == moved
  assert (listing(ckpt) == before) != moved
  # The move, then the barrier (once, with 6 gone); none when nothing moved.
  # (Opening a checkpoint directory has its own barrier, after unfinished
  # writes are removed: the first one recorded.)
  assert barriers[0][0] == "seq2seq_jax: unfinished checkpoint writes removed"
  moves = [listing for name, listing in barriers if "set aside" in name]
  assert moves == ([["2", "4"]] if moved else [])

# --- a checkpoint directory that refuses writes (in-process) ----------------

def refuse_writes(monkeypatch, directory: str, err: int) -> None:
  """Every file or directory created below `directory` fails with `err`,
  as in a directory the process may not write (its permission bits, a
  read-only mount). Made by patching the calls that create files, because
  root ignores permission bits (and chattr +i or a read-only bind mount
  need privileges and file systems that a test cannot count on)."""
  below = os.path.abspath(directory) + os.sep
  real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

  def check(path):
    if not isinstance(path, int) and os.path.abspath(os.fsdecode(path)).startswith(below):
      raise OSError(err, os.strerror(err), os.fsdecode(path))

  def open_(file, mode="r", *args, **kwargs):
    if set(mode) & set("wxa+"):
      check(file)
    return real_open(file, mode, *args, **kwargs)

  def os_open(path, flags, *args, **kwargs):
    if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
      check(path)
    return real_os_open(path, flags, *args, **kwargs)

  def mkdir(path, *args, **kwargs):
    check(path)
    return real_mkdir(path, *args, **kwargs)

  monkeypatch.setattr(builtins, "open", open_)
  monkeypatch.setattr(os, "open", os_open)
  monkeypatch.setattr(os, "mkdir", mkdir)


def test_unwritable_checkpoint_directory_is_a_clear_error(tmp_path, six_steps, monkeypatch):
  workdir = str(tmp_path / "w")
  shutil.copytree(six_steps, workdir)
  ckpt = os.path.join(workdir, "checkpoints")
  refuse_writes(monkeypatch, ckpt, errno.EACCES)
  with pytest.raises(CheckpointError, match=r"cannot write checkpoint 8 to .*Permission denied"
                                            r".*the earlier checkpoints \(2, 4, 6\) are intact"):
    trainer.train_and_evaluate(tiny(), workdir)
  monkeypatch.undo()
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
    monkeypatch.setattr(checkpoints, "os", os_with(fsync=disk_full))
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
  """Training settings, dropout, speed-only fields and fields this model
  (a GRU with Bahdanau attention, additive score, softmax) does not read."""
  workdir = str(tmp_path / "w")
  shutil.copytree(six_steps, workdir)
  changed = tiny(**{"train.num_steps": 8, "train.eval_every": 7, "train.log_every": 1,
                    "train.checkpoint_every": 3, "train.progress_bar": True,
                    "eval.num_samples": 1, "model.dropout": 0.0, "model.scan_unroll": 2,
                    "model.recurrence": "scan", "model.transformer.d_model": 64,
                    "model.decoder.input_feeding": False, "model.attention.topk": 3})
  assert trainer.train_and_evaluate(changed, workdir) is not None
  assert Checkpoints(os.path.join(workdir, "checkpoints")).latest_step() == 8
  assert [e["step"] for e in read_metrics(workdir, "valid")][-1] == 8


@pytest.mark.parametrize("field,saved,value", [
    ("model.encoder.hidden", 16, 32), ("model.decoder.cell", "gru", "lstm"),
    ("model.attention.score", "additive", "general"),
    ("model.attention.normalize", "softmax", "sparsemax")])
def test_resume_refuses_a_change_to_the_trained_function(tmp_path, six_steps, field, saved,
                                                         value):
  workdir = str(tmp_path / "w")
  shutil.copytree(six_steps, workdir)
  before = listing(workdir)
  with pytest.raises(CheckpointError) as raised:
    trainer.train_and_evaluate(tiny(**{field: value}), workdir)
  assert str(raised.value) == (
      f"{workdir} holds checkpoints of a different model ({field}: {saved!r} -> {value!r}); "
      "use another --workdir or the original config")
  assert listing(workdir) == before


def test_resume_refuses_to_start_a_moving_average_midway(tmp_path, six_steps):
  """Checkpoints without `raw_params` cannot resume a run with
  train.ema_decay (nor the reverse, tested with the average): one message,
  nothing touched, rather than a restore failure taken for damage."""
  workdir = str(tmp_path / "w")
  shutil.copytree(six_steps, workdir)
  before = listing(workdir)
  with pytest.raises(CheckpointError) as raised:
    trainer.train_and_evaluate(tiny(**{"train.ema_decay": 0.999}), workdir)
  assert str(raised.value) == (
      f"{workdir} holds checkpoints trained without a moving average of the parameters "
      "(train.ema_decay = 0), and this config has train.ema_decay=0.999; resume with the "
      "setting the run started with, or use another --workdir")
  assert listing(workdir) == before


def test_resume_refuses_checkpoints_with_the_old_optimizer_layout(tmp_path, six_steps):
  """Checkpoints written before the optimizer state became one vector per
  model (their meta lacks `optimizer_state`) cannot resume: one message,
  nothing touched, rather than a restore failure taken for damage. Their
  parameters still load."""
  workdir = str(tmp_path / "w")
  shutil.copytree(six_steps, workdir)
  for step in ("2", "4", "6"):
    path = os.path.join(workdir, "checkpoints", step, "meta", "metadata")
    with open(path) as f:
      meta = json.load(f)
    del meta["optimizer_state"]
    with open(path, "w") as f:
      json.dump(meta, f)
  before = listing(workdir)
  with pytest.raises(CheckpointError) as raised:
    trainer.train_and_evaluate(tiny(), workdir)
  assert str(raised.value) == (
      f"{workdir} holds checkpoints written before the optimizer state became one vector per "
      "model (seq2seq-jax before 2026-12-04); their parameters still evaluate and translate, "
      "but training cannot resume from them: use another --workdir")
  assert listing(workdir) == before
  assert inference.load_workdir(workdir).step == 6


def conflicts(saved: dict, current: dict) -> list:
  """resume_conflicts between two tiny configs, each with `saved` / `current`
  overrides."""
  return config_schema.resume_conflicts(config_schema.model_fields(tiny(**saved)),
                                        config_schema.model_fields(tiny(**current)))


def test_resume_rule_counts_only_what_the_model_reads():
  plain = {"model.decoder.type": "plain"}
  assert conflicts(plain, {**plain, "model.attention.score": "general",
                           "model.attention.dim": 4}) == []
  luong = {"model.decoder.type": "luong", "model.attention.score": "general"}
  assert conflicts(luong, {**luong, "model.decoder.input_feeding": False}) == [
      "model.decoder.input_feeding"]
  topk = {"model.attention.normalize": "topk"}
  assert conflicts(topk, {**topk, "model.attention.topk": 2}) == ["model.attention.topk"]
  assert conflicts({}, {"model.attention.dim": 4}) == ["model.attention.dim"]  # additive
  general = {"model.attention.score": "general"}
  assert conflicts(general, {**general, "model.attention.dim": 4}) == []
  assert conflicts({}, {"model.decoder.type": "luong"}) == ["model.decoder.type"]
  transformer = {"model.name": "transformer", "model.transformer.max_len": 64}
  assert conflicts(transformer, {**transformer, "model.encoder.hidden": 8,
                                 "model.embed_dim": 4, "model.transformer.max_len": 96,
                                 "model.transformer.attention_dropout": 0.2}) == []
  assert conflicts(transformer, {**transformer, "model.transformer.d_model": 64}) == [
      "model.transformer.d_model"]
  learned = {**transformer, "model.transformer.positional": "learned"}
  assert conflicts(learned, {**learned, "model.transformer.max_len": 96}) == [
      "model.transformer.max_len"]
  assert conflicts({}, {"data.spm_vocab_size": 100}) == []  # char tokenizers
  spm = {"data.src_tokenizer": "sentencepiece", "data.tgt_tokenizer": "sentencepiece"}
  assert conflicts(spm, {**spm, "data.spm_vocab_size": 100}) == ["data.spm_vocab_size"]
  assert conflicts({}, {"data.min_freq": 2}) == ["data.min_freq"]


def test_resume_rule_ignores_fields_newer_than_the_checkpoint():
  """An old checkpoint did not record model.recurrence or model.scan_unroll:
  today's values are not compared, and the rest still is."""
  old = config_schema.model_fields(tiny())
  del old["model.recurrence"], old["model.scan_unroll"]
  assert config_schema.resume_conflicts(old, config_schema.model_fields(tiny())) == []
  assert config_schema.resume_conflicts(
      old, config_schema.model_fields(tiny(**{"model.decoder.hidden": 8}))) == [
          "model.decoder.hidden"]
  # Except a field that alone changes the parameters' layout: a checkpoint
  # from before ensembles holds one model.
  del old["model.ensemble_size"]
  assert config_schema.resume_conflicts(old, config_schema.model_fields(tiny())) == []
  assert config_schema.resume_conflicts(
      old, config_schema.model_fields(tiny(**{"model.ensemble_size": 2}))) == [
          "model.ensemble_size"]
