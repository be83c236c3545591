"""Subprocess side of tests/test_parallel.py (JAX must see its forced device
count and distributed setup before it starts, so these run in fresh
processes).

  python tests/parallel_worker.py equivalence   # prints one JSON line
  python tests/parallel_worker.py portability <dir>
  python tests/parallel_worker.py train <workdir> <port> <num_processes> <process_id>
"""

import json
import os
import sys

if __name__ == "__main__":  # (imported by the tests for its helpers: change nothing)
  MODE = sys.argv[1]
  os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=" + (
      "2" if MODE == "train" else "4")
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from seq2seq_jax import parallel  # noqa: E402
from tests import tiny_config  # noqa: E402


def tiny_parts(batch_size=8):
  """A tiny model, its train config and a reverse-task batch with padding and
  a filler row, so uneven token counts across shards matter."""
  from seq2seq_jax.models.rnn_seq2seq import RNNSeq2Seq
  model = RNNSeq2Seq(12, 12, embed_dim=8, encoder_hidden=16, encoder_layers=1,
                     decoder_hidden=16, attention_dim=8)
  rng = np.random.default_rng(0)
  b = batch_size
  src = rng.integers(4, 12, size=(b, 5)).astype(np.int32)
  src_len = rng.integers(2, 6, size=b).astype(np.int32)
  weights = np.ones((b, 6), np.float32)
  for i in range(b):
    weights[i, src_len[i] + 1:] = 0
  src_len[-1] = 0
  weights[-1] = 0  # a filler row
  tgt = src[:, ::-1]
  batch = {"src": src, "src_len": src_len,
           "tgt_in": np.concatenate([np.ones((b, 1), np.int32), tgt], 1),
           "tgt_out": np.concatenate([tgt, np.full((b, 1), 2, np.int32)], 1),
           "weights": weights}
  cfg = tiny_config.get_config().train
  cfg.update(learning_rate=1e-2, warmup_steps=0, num_steps=100, decay="constant")
  return model, cfg, batch


def max_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def equivalence():
  """One step on 2, 4 devices (jit), 4 devices (pmap), with and without
  gradient accumulation, against the step of a single-device run (jit on
  one device, no accumulation)."""
  model, cfg, batch = tiny_parts()
  key = jax.random.key(1)

  def one_step(strategy, n, k):
    dp = parallel.DataParallel(strategy, parallel.make_mesh(jax.devices()[:n]))
    state = dp.to_device(dp.init_state(model, cfg, jax.random.key(0), batch))
    state, m = dp.train_step(grad_accum_steps=k)(state, dp.put_batch(batch), key)
    host = dp.to_host(state)
    return host, {"strategy": strategy, "devices": n, "accum": k,
                  "loss": float(m["loss"]), "loss_sum": float(m["loss_sum"]),
                  "weight_sum": float(m["weight_sum"]),
                  "step": int(jax.device_get(host.step)),
                  "sharding": str(jax.tree.leaves(host.params)[0].sharding.spec)}

  ref, out = one_step("jit", 1, 1)
  out["runs"] = []
  for strategy, n, k in [("jit", 2, 1), ("jit", 4, 1), ("pmap", 4, 1), ("jit", 2, 2),
                         ("pmap", 4, 2)]:
    host, run = one_step(strategy, n, k)
    out["runs"].append(dict(run, param_diff=max_diff(host.params, ref.params)))
  print(json.dumps(out))


def portability(directory):
  """Save on N devices, restore on M, continue: equals the uninterrupted run."""
  from seq2seq_jax.checkpoints import Checkpoints
  model, cfg, _ = tiny_parts()
  batches = [tiny_parts_batch(s) for s in range(4)]
  key = jax.random.key(1)

  def train(dp, state, steps):
    step = dp.train_step()
    state = dp.to_device(state)
    for s in steps:
      state, _ = step(state, dp.put_batch(batches[s]), key)
    return dp.to_host(state)

  one = parallel.DataParallel("jit", parallel.make_mesh(jax.devices()[:1]))
  full = train(one, one.init_state(model, cfg, jax.random.key(0), batches[0]), range(4))
  out = {}
  for name, (n, m, strategy) in {"2->1": (2, 1, "jit"), "1->2": (1, 2, "jit"),
                                 "4->2 pmap": (4, 2, "pmap")}.items():
    first = parallel.DataParallel(strategy if n == 4 else "jit",
                                  parallel.make_mesh(jax.devices()[:n]))
    state = train(first, first.init_state(model, cfg, jax.random.key(0), batches[0]), range(2))
    ckpts = Checkpoints(os.path.join(directory, name.replace(" ", "_")))
    ckpts.save(state, {"devices": n})
    ckpts.wait()
    second = parallel.DataParallel("jit", parallel.make_mesh(jax.devices()[:m]))
    fresh = second.init_state(model, cfg, jax.random.key(5), batches[0])
    restored = ckpts.restore(fresh)
    ckpts.close()
    devices = {d.id for x in jax.tree.leaves(restored.params) for d in x.sharding.device_set}
    resumed = train(second, restored, range(int(jax.device_get(restored.step)), 4))
    out[name] = {"param_diff": max_diff(resumed.params, full.params),
                 "opt_diff": max_diff(resumed.opt_state, full.opt_state),
                 "step": int(jax.device_get(resumed.step)), "restored_on": len(devices)}
  print(json.dumps(out))


def tiny_parts_batch(seed):
  model, cfg, batch = tiny_parts()
  rng = np.random.default_rng(seed)
  perm = rng.permutation(len(batch["src"]) - 1)
  return {k: np.concatenate([v[:-1][perm], v[-1:]]) for k, v in batch.items()}


class Recorded:
  """A split that records which examples are read at random (`reads`);
  iteration (building tokenizers) is not recorded."""

  def __init__(self, pairs):
    self.pairs, self.reads = pairs, []

  def __len__(self):
    return len(self.pairs)

  def __getitem__(self, i):
    self.reads.append(int(i))
    return self.pairs[i]

  def __iter__(self):
    return iter(self.pairs)


def train(workdir, port, num_processes, process_id):
  from seq2seq_jax import trainer
  from seq2seq_jax.data import sources
  load, recorded = sources.load_splits, {}

  def load_recorded(data_config, only=sources.SPLITS):
    splits = load(data_config, only)
    recorded["train"] = splits["train"] = Recorded(splits["train"])
    return splits

  sources.load_splits = load_recorded
  config = multiprocess_config()
  config.parallel.coordinator_address = f"127.0.0.1:{port}"
  config.parallel.num_processes = int(num_processes)
  config.parallel.process_id = int(process_id)
  trainer.train_and_evaluate(config, workdir, stop_after=config.train.num_steps // 2)
  mesh = parallel.make_mesh()
  rows = parallel.process_rows(mesh, config.train.batch_size)
  # The census (pipeline.Batches) reads examples i = process mod N first;
  # every later read is of an example in this process's rows of a batch.
  reads, n = recorded["train"].reads, len(recorded["train"])
  census = len(range(jax.process_index(), n, jax.process_count()))
  print(json.dumps({"process": jax.process_index(), "processes": jax.process_count(),
                    "devices": jax.device_count(), "rows": [rows.start, rows.stop],
                    "census_reads": reads[:census] == list(range(jax.process_index(), n,
                                                                  jax.process_count())),
                    "batch_reads": sorted(set(reads[census:]))}), flush=True)


def train_until_signalled(workdir, port, num_processes, process_id):
  """Trains for far more steps than the test waits; the test sends SIGTERM to
  one process only, and every process must stop at the same step."""
  from seq2seq_jax import trainer
  from seq2seq_jax.checkpoints import Checkpoints
  config = multiprocess_config()
  config.train.num_steps = 100_000
  config.train.checkpoint_every = 100_000
  config.parallel.coordinator_address = f"127.0.0.1:{port}"
  config.parallel.num_processes = int(num_processes)
  config.parallel.process_id = int(process_id)
  assert trainer.train_and_evaluate(config, workdir) is None  # stopped, not finished
  steps = Checkpoints(os.path.join(workdir, "checkpoints")).all_steps()
  print(json.dumps({"process": jax.process_index(), "checkpoints": steps}), flush=True)


def multiprocess_config():
  """tests/tiny_config.py trimmed to training only: stop_after half the
  steps skips the final evaluation, and eval_every is out of reach."""
  config = tiny_config.get_config()
  config.model.dropout = 0.0  # equal to a single-process run, not only in distribution
  config.train.num_steps = 8
  config.train.eval_every = 1000
  config.eval.num_attention_plots = 0
  return config


if __name__ == "__main__":
  if MODE == "equivalence":
    equivalence()
  elif MODE == "portability":
    portability(sys.argv[2])
  elif MODE == "train":
    train(*sys.argv[2:6])
  elif MODE == "signal":
    train_until_signalled(*sys.argv[2:6])
  else:
    raise SystemExit(f"unknown mode {MODE!r}")
