"""Does input keep up with training? The loader's own throughput against the
train step's, and the share of training time spent waiting for input.

  python tools/input_speed.py --config=configs/g2p_bahdanau.py --steps=300

1. The loader alone: batches per second that `pipeline.Batches.iterate`
   delivers (grain worker threads reading, tokenizing and padding), for 0
   threads (built on demand) and for each of --threads.
2. Training: `train.py`'s loop for --steps steps in a temporary workdir (no
   evaluation), reporting steps per second and `input_wait_share`, the
   share of training time the loop spent blocked on the loader.
Input keeps up when (1) is well above the steps per second of (2) and the
wait share is near 0.
"""

import json
import os
import sys
import tempfile
import time

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout without installing

from seq2seq_jax import trainer  # noqa: E402
from seq2seq_jax.cli import write_json  # noqa: E402
from seq2seq_jax.metric_writer import read_metrics  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", os.path.join(ROOT, "configs", "g2p_bahdanau.py"),
                                "The config whose data and model to measure.")
flags.DEFINE_integer("steps", 300, "Training steps of the in-training measurement.")
flags.DEFINE_integer("batches", 300, "Batches the loader delivers in the loader-only measurement.")
flags.DEFINE_list("threads", ["1", "2"], "Loader worker threads to measure (0 is always measured).")
flags.DEFINE_string("json", None, "Also write the results to this JSON file.")


def loader_rate(batches, threads: int, count: int) -> float:
  """Batches per second `batches` delivers from step 0 with `threads`
  workers (after the first batch)."""
  batches.threads = threads
  stream = batches.iterate(0)
  next(stream)  # starts the workers
  start = time.perf_counter()
  for _ in range(count):
    next(stream)
  return count / (time.perf_counter() - start)


def main(argv):
  del argv
  absl_logging.set_verbosity(absl_logging.WARNING)
  config = FLAGS.config
  out = {"config": sys.argv[1:], "batch_size": config.train.batch_size}
  with tempfile.TemporaryDirectory() as tmp:
    run = trainer.Run(config, os.path.join(tmp, "census"))
    out["loader_batches_per_s"] = {
        str(t): round(loader_rate(run.train_batches, t, FLAGS.batches), 1)
        for t in sorted({0, *(int(t) for t in FLAGS.threads)})}
    with config.unlocked():
      config.train.num_steps = max(config.train.num_steps, FLAGS.steps + 1)  # its schedule
      config.train.eval_every = FLAGS.steps + 1
      config.train.checkpoint_every = FLAGS.steps + 1
      config.train.log_every = max(1, FLAGS.steps // 3)
      config.train.progress_bar = False
      config.eval.num_attention_plots = 0
    workdir = os.path.join(tmp, "train")
    trainer.train_and_evaluate(config, workdir, stop_after=FLAGS.steps)
    logs = read_metrics(workdir, "train")[1:]  # the first interval includes warm-up
    out["train_steps_per_s"] = round(sum(e["steps_per_second"] for e in logs) / len(logs), 2)
    out["input_wait_share"] = round(sum(e["input_wait_share"] for e in logs) / len(logs), 4)
    out["loader_threads"] = config.data.loader_threads
  print(json.dumps(out, indent=1))
  if FLAGS.json:
    write_json(FLAGS.json, out)


if __name__ == "__main__":
  app.run(main)
