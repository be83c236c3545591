"""Where a train step's time goes: a `jax.profiler` trace of a few steps of a
config's model on real batches, summed per XLA operation.

  python tools/profile_step.py                                   # configs/default.py
  python tools/profile_step.py --config=configs/reference.py --steps=5 --top=15

Prints the step's wall time inside XLA's executor, the number of XLA
operations (thunks) it runs and the sum of their times, and the operations
that take the most time in total. The raw trace stays in --trace_dir for
TensorBoard's profile plugin or Perfetto. This is the evidence behind the
README's account of what bounds the step time on a CPU.
"""

import collections
import glob
import gzip
import json
import os
import shutil
import sys

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "configs", "default.py"), "Config whose model and batches to profile.")
flags.DEFINE_integer("steps", 5, "Profiled steps (after 3 warm-up steps).")
flags.DEFINE_integer("top", 12, "Operations listed.")
flags.DEFINE_string("trace_dir", "/tmp/seq2seq_jax_profile", "Where the trace is written.")

# Trace events that are bookkeeping around the operations, not operations.
_NOT_OPS = ("$", "end:", "Thunk", "Slinky", "Pjit", "Common", "Parse", "Alloc")
_EXECUTE = "ThunkExecutor::Execute (wait for completion)"


def summarize(trace_dir: str, steps: int, top: int) -> str:
  path = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)[0]
  with gzip.open(path) as f:
    events = [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X"]
  total, count = collections.Counter(), collections.Counter()
  wall = 0.0
  for e in events:
    if e["name"] == _EXECUTE:
      wall += e["dur"]
    elif not e["name"].startswith(_NOT_OPS):
      total[e["name"]] += e["dur"]
      count[e["name"]] += 1
  # "while" events span their whole loop (children included): not summed.
  ops = {k: v for k, v in total.items() if not k.startswith("while")}
  lines = [f"per step: {wall / steps / 1e3:.1f} ms in XLA's executor, "
           f"{sum(count[k] for k in ops) // steps} operations run, "
           f"{sum(ops.values()) / steps / 1e3:.1f} ms summed over them (both cores)",
           f"{'ms/step':>8} {'runs':>6} {'us/run':>7}  operation"]
  for name, us in sorted(ops.items(), key=lambda kv: -kv[1])[:top]:
    n = count[name] // steps
    lines.append(f"{us / steps / 1e3:8.2f} {n:6d} {us / max(count[name], 1):7.0f}  {name}")
  return "\n".join(lines)


def main(argv):
  del argv
  from seq2seq_jax import host  # pylint: disable=import-outside-toplevel
  host.configure()  # as train.py runs
  import jax  # pylint: disable=import-outside-toplevel
  from seq2seq_jax import evaluation, parallel, trainer, training  # pylint: disable=import-outside-toplevel

  config = FLAGS.config
  run = trainer.Run(config, os.path.join(FLAGS.trace_dir, "workdir"))
  engine = parallel.DataParallel(config.parallel.strategy)
  batches = [evaluation.model_batch(run.train_batches.batch_at(i))
             for i in range(run.train_batches.steps_per_epoch)]
  # The most common bucket shape: the step most of a run consists of.
  shapes = collections.Counter(b["src"].shape for b in batches)
  shape = shapes.most_common(1)[0][0]
  batch = engine.put_batch(next(b for b in batches if b["src"].shape == shape))
  state = engine.to_device(engine.init_state(run.model, config.train, jax.random.key(0), batch))
  step = engine.train_step(train_cfg=config.train)  # the run's step, schedule as an argument
  rng = jax.random.key(1)
  if config.parallel.strategy == "jit":  # compile time, with no cache to help
    import time  # pylint: disable=import-outside-toplevel
    jax.config.update("jax_enable_compilation_cache", False)
    start = time.perf_counter()
    lowered = engine._step.lower(  # pylint: disable=protected-access
        state, batch, rng, None, training.schedule_values(config.train))
    middle = time.perf_counter()
    lowered.compile()
    print(f"train step: lower {middle - start:.1f} s, compile {time.perf_counter() - middle:.1f} s")
  for _ in range(3):
    state, metrics = step(state, batch, rng)
  jax.block_until_ready(metrics)
  shutil.rmtree(FLAGS.trace_dir, ignore_errors=True)
  with jax.profiler.trace(FLAGS.trace_dir):
    for _ in range(FLAGS.steps):
      state, metrics = step(state, batch, rng)
      jax.block_until_ready(metrics)
  print(f"{config.model.name}, batch {shape[0]} x source {shape[1]} "
        f"(the most common bucket), {FLAGS.steps} steps")
  print(summarize(FLAGS.trace_dir, FLAGS.steps, FLAGS.top))


if __name__ == "__main__":
  app.run(main)
