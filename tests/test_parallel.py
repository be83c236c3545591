"""Data parallelism: device counts, jit vs pmap, several processes, portable
checkpoints, gradient accumulation, mixed precision.

Forced host devices (XLA_FLAGS) and jax.distributed must be set before JAX
starts, so those tests run tests/parallel_worker.py in fresh processes.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from seq2seq_jax import config_schema, parallel, trainer, training
from seq2seq_jax.errors import ConfigError
from seq2seq_jax.metric_writer import read_metrics
from tests import parallel_worker as worker_module  # noqa: F401  (importable; runs nothing)
from tests.train_steps import compiled_step, init_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "parallel_worker.py")


def worker(*args, timeout=400):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  proc = subprocess.run([sys.executable, WORKER, *map(str, args)], env=env, cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_one_step_same_on_1_2_4_devices_jit_pmap_and_accumulation():
  out = worker("equivalence")
  runs = {(r["strategy"], r["devices"], r["accum"]): r for r in out["runs"]}
  assert set(runs) == {("jit", 2, 1), ("jit", 4, 1), ("pmap", 4, 1), ("jit", 2, 2),
                       ("pmap", 4, 2)}
  assert out["step"] == 1 and out["sharding"] == "P()"  # the single-device reference
  for key, r in runs.items():
    # Same global batch: same loss (normalized by the global token count,
    # not a mean of per-device means) and the same parameters afterwards.
    np.testing.assert_allclose(r["loss"], out["loss"], rtol=1e-5, err_msg=str(key))
    assert r["weight_sum"] == out["weight_sum"]
    assert r["param_diff"] < 1e-5, key
    assert r["step"] == 1 and r["sharding"] == "P()"  # parameters replicated


def test_checkpoint_saved_on_n_devices_continues_on_m(tmp_path):
  out = worker("portability", tmp_path)
  assert set(out) == {"2->1", "1->2", "4->2 pmap"}
  for name, r in out.items():
    assert r["step"] == 4, name
    assert r["restored_on"] == int(name.split("->")[1][0]), name  # on the new mesh
    # Sharded gradient sums add in another order; Adam's m / sqrt(v) magnifies
    # that where v is tiny (4e-6 to 1.1e-5 measured, depending on the init
    # draw). A wrong restore moves parameters by about the rate, 1e-2.
    assert r["param_diff"] < 5e-5 and r["opt_diff"] < 1e-5, (name, r)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _saved_params(workdir):
  """Step 4's parameters, onto this process's first device whatever mesh
  saved them."""
  path = os.path.join(workdir, "checkpoints", "4", "state")
  with ocp.StandardCheckpointer() as ckptr:
    tree = ckptr.metadata(path).item_metadata.tree
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
    return ckptr.restore(path, target)["params"]


@pytest.mark.slow
def test_two_processes_equal_one_process(tmp_path):
  """2 processes x 2 devices on 127.0.0.1 (gloo collectives) against one
  process on one device, both on the same global batches."""
  workdir = str(tmp_path / "multi")
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  procs = [subprocess.Popen([sys.executable, WORKER, "train", workdir, str(port), "2", str(i)],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for i in range(2)]
  try:
    outs = [p.communicate(timeout=400) for p in procs]
  finally:
    for p in procs:  # never leave a process waiting for its peer
      if p.poll() is None:
        p.kill()
        p.wait()
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
  assert [r["process"] for r in reports] == [0, 1]
  assert all(r["processes"] == 2 and r["devices"] == 4 for r in reports)
  # Each process feeds its own rows; together every row once.
  assert reports[0]["rows"] == [0, 16] and reports[1]["rows"] == [16, 32]
  # Process 0 alone wrote the metrics (one line per log point, not two) and
  # TensorBoard; its console output has the run's lines, process 1's not.
  assert [e["step"] for e in read_metrics(workdir, "train")] == [2, 4]
  assert len(os.listdir(os.path.join(workdir, "tensorboard"))) == 1
  assert "parameters" in outs[0][0] and "parameters" not in outs[1][0]

  single = str(tmp_path / "single")
  config = worker_module.multiprocess_config()
  assert jax.device_count() == 1  # the pytest process: one device
  assert trainer.train_and_evaluate(config, single, stop_after=4) is None
  multi_params, single_params = _saved_params(workdir), _saved_params(single)
  for a, b in zip(jax.tree.leaves(multi_params), jax.tree.leaves(single_params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  losses = [[e["loss"] for e in read_metrics(w, "train")] for w in (workdir, single)]
  np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
  # Each process read only its own rows of each global batch: the census
  # (one pass: examples i = process mod 2) and then examples of its rows of
  # the single-process run's batches, for the 4 steps trained and at most
  # the loader's prefetch beyond; the two processes read disjoint examples.
  batches = trainer.Run(config, single).train_batches
  ahead = 4 + config.data.prefetch + config.data.loader_threads + 1
  reads = [set(r["batch_reads"]) for r in reports]
  assert all(r["census_reads"] for r in reports) and not reads[0] & reads[1]
  for rows, read in zip(((0, 16), (16, 32)), reads):
    trained = {int(i) for s in range(4) for i in batches.members(s)[slice(*rows)]}
    allowed = {int(i) for s in range(ahead) for i in batches.members(s)[slice(*rows)]}
    assert trained <= read <= allowed, (sorted(trained - read), sorted(read - allowed))


@pytest.mark.slow
def test_sigterm_to_one_process_stops_every_process_at_the_same_step(tmp_path):
  """A preemption notice reaching one host: the processes agree at the next
  log point, all checkpoint the same step and exit 0 (none is left waiting
  in a collective for a peer that has gone)."""
  workdir = str(tmp_path / "multi")
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  errs = [open(tmp_path / f"err{i}.txt", "w+") for i in range(2)]
  procs = [subprocess.Popen([sys.executable, WORKER, "signal", workdir, str(port), "2", str(i)],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=errs[i],
                            text=True) for i in range(2)]
  try:
    first = ""  # up to process 0's "N parameters ..." line: training starts
    while "parameters" not in first:
      line = procs[0].stdout.readline()  # (gloo prints its own lines first)
      assert line, first + _read(errs[0])[-3000:]
      first += line
    time.sleep(2.0)
    procs[1].send_signal(signal.SIGTERM)  # process 1 only
    outs = [p.communicate(timeout=300)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  for p, err in zip(procs, errs):
    assert p.returncode == 0, _read(err)[-3000:]
  reports = [json.loads(out.strip().splitlines()[-1]) for out in outs]
  assert reports[0]["checkpoints"] == reports[1]["checkpoints"]
  (step,) = reports[0]["checkpoints"]
  assert 0 < step < 100_000 and step % 2 == 0  # stopped at a log point (log_every 2)
  assert f"a stop signal to process 1: stopped at step {step}" in first + outs[0]


def _read(f) -> str:
  f.flush()
  f.seek(0)
  return f.read()


# --- in-process (one device) ------------------------------------------------

def _tiny():
  model, cfg, batch = worker_module.tiny_parts(batch_size=16)
  return model, cfg, batch


def test_grad_accumulation_equals_one_large_batch():
  model, cfg, batch = _tiny()
  key = jax.random.key(1)
  results = {}
  for k in (1, 4):
    state = init_state(model, cfg, jax.random.key(0), batch)
    step = compiled_step(grad_accum_steps=k)
    for _ in range(3):
      state, m = step(state, batch, key)
    results[k] = (state, m)
  (big, m1), (acc, m4) = results[1], results[4]
  for a, b in zip(jax.tree.leaves(big.params), jax.tree.leaves(acc.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  for name in ("loss", "loss_sum", "weight_sum", "correct_sum"):
    np.testing.assert_allclose(m1[name], m4[name], rtol=1e-5)


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_mixed_precision_trains_with_float32_parameters(precision):
  model, cfg, batch = _tiny()
  cfg.precision = precision
  state = init_state(model, cfg, jax.random.key(0), batch)
  assert isinstance(state, training.DynamicScaleState) == (precision == "float16")
  step = compiled_step(precision=precision)
  losses = []
  for _ in range(30):
    state, m = step(state, batch, jax.random.key(1))
    losses.append(float(m["loss"]))
  assert losses[-1] < 0.7 * losses[0], losses
  floats = [leaf for leaf in jax.tree.leaves((state.params, state.opt_state))
            if jnp.issubdtype(leaf.dtype, jnp.floating)]
  assert floats and all(leaf.dtype == jnp.float32 for leaf in floats)


def _one_step(precision, loss_scale=None):
  """(state before, state after, metrics) of one step from the same start."""
  model, cfg, batch = _tiny()
  cfg.precision = precision
  state = init_state(model, cfg, jax.random.key(0), batch)
  if loss_scale is not None:
    state = state.replace(loss_scale=jnp.float32(loss_scale))
  before = jax.device_get(state)  # the step donates `state`
  after, m = compiled_step(precision=precision)(state, batch, jax.random.key(1))
  return before, jax.device_get(after), m


def _flat(tree, path_part=""):
  return np.concatenate([np.ravel(x) for path, x in jax.tree.leaves_with_path(tree)
                         if path_part in jax.tree_util.keystr(path)])


def test_float16_step_is_the_float32_step_to_float16_rounding():
  before, f16, m16 = _one_step("float16")
  _, f32, m32 = _one_step("float32")
  # The gradients did not overflow at the starting scale: the update was applied.
  assert float(f16.loss_scale) == float(before.loss_scale) == 2.0 ** 15
  assert int(m16["nonfinite_steps"]) == 0
  np.testing.assert_allclose(m16["loss"], m32["loss"], rtol=1e-4)
  np.testing.assert_allclose(m16["grad_norm"], m32["grad_norm"], rtol=1e-3)
  # Adam's first moment after one step is 0.1 x the (unclipped: norm < 1)
  # gradient: unscaled, the float16 gradient is the float32 one.
  assert float(m32["grad_norm"]) < _tiny()[1].grad_clip_norm
  g16, g32 = _flat(f16.opt_state, ".mu"), _flat(f32.opt_state, ".mu")
  assert np.linalg.norm(g16 - g32) < 5e-3 * np.linalg.norm(g32)
  # So is the update, wherever the gradient is not so small that float16
  # rounding can flip its sign (Adam's first step is lr x sign(gradient)).
  u16, u32 = _flat(f16.params) - _flat(before.params), _flat(f32.params) - _flat(before.params)
  clear = np.abs(g32) > 1e-3 * np.abs(g32).max()
  assert clear.mean() > 0.5 and np.all(u32[clear] != 0)
  np.testing.assert_allclose(u16[clear], u32[clear], atol=1e-5)


def test_float16_overflow_halves_the_scale_and_changes_no_parameter():
  """A scale so large that the float16 gradients overflow (the loss itself
  stays finite): the step applies nothing, halves the scale and moves on."""
  before, after, m = _one_step("float16", loss_scale=2.0 ** 40)
  assert not np.isfinite(float(m["grad_norm"])) and np.isfinite(float(m["loss"]))
  assert float(after.loss_scale) == 2.0 ** 39
  assert int(after.step) == int(before.step) + 1
  for a, b in zip(jax.tree.leaves((before.params, before.opt_state)),
                  jax.tree.leaves((after.params, after.opt_state))):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("precision,dtype", [("bfloat16", "bf16"), ("float16", "f16")])
def test_reduced_precision_really_computes_in_it(precision, dtype):
  model, cfg, batch = _tiny()
  cfg.precision = precision
  state = training.create_train_state(model, cfg, jax.random.key(0), batch)
  jaxpr = str(jax.make_jaxpr(training.step_function(precision=precision))(
      state, batch, jax.random.key(1)))
  assert re.search(rf"\b{dtype}\[16,6,12\]", jaxpr)  # the logits
  f32 = str(jax.make_jaxpr(training.step_function())(state, batch, jax.random.key(1)))
  assert not re.search(r"\b(bf16|f16)\[", f32)


def test_config_errors_are_one_line():
  from configs import default
  config = default.get_config()
  config.train.grad_accum_steps = 3
  with pytest.raises(ConfigError, match=r"batch_size \(64\) must be divisible by "
                                        r"config.train.grad_accum_steps \(3\)"):
    config_schema.validate(config)
  config = default.get_config()
  config.parallel.strategy = "pjit"
  with pytest.raises(ConfigError, match="config.parallel.strategy must be one of jit, pmap"):
    config_schema.validate(config)
  config = default.get_config()
  config.train.precision = "fp8"
  with pytest.raises(ConfigError, match="config.train.precision must be one of"):
    config_schema.validate(config)
  dp = parallel.DataParallel("jit")
  dp.num_shards = 3  # as on a 3-device machine
  with pytest.raises(ConfigError, match=r"divisible by the number of devices \(3\) x "
                                        r"config.train.grad_accum_steps \(2\) = 6"):
    dp.check_batch_size(64, 2)
