"""Trains every attention decoder x score x normalizer on one task and tables
held-out exact match and the steps each needs to reach a target accuracy.

  python -m seq2seq_jax.attention_sweep --workdir=runs/attention_sweep \
      --out=docs/attention_sweep

Each combination is an ordinary `train_and_evaluate` run of the base config
(default: configs/default.py) with a fixed step budget and frequent
evaluation; reruns resume, so an interrupted sweep picks up where it stopped.
Writes `<out>.json` and `<out>.md` (a markdown table with the command).
"""

import copy
import itertools
import json
import os
import sys
import time

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from seq2seq_jax.models.attention import NORMALIZERS, SCORES

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "configs", "default.py"), "Base config.", lock_config=True)
flags.DEFINE_string("workdir", "runs/attention_sweep", "One sub-directory per combination.")
flags.DEFINE_string("out", "docs/attention_sweep", "Results path prefix (.json and .md).")
flags.DEFINE_list("decoders", ["bahdanau", "luong"], "Attention decoders to sweep.")
flags.DEFINE_list("scores", list(SCORES), "Score functions to sweep.")
flags.DEFINE_list("normalizers", list(NORMALIZERS), "Normalizers to sweep.")
flags.DEFINE_integer("topk", 2, "k of the topk normalizer.")
flags.DEFINE_integer("steps", 400, "Training steps per combination (the budget).")
flags.DEFINE_integer("eval_every", 50, "Validation interval: the resolution of 'steps to target'.")
flags.DEFINE_integer("eval_examples", 500, "Validation examples decoded at each evaluation.")
flags.DEFINE_float("target", 0.99, "Validation exact match that counts as reached.")


def steps_to_target(events: list, target: float):
  """First validation step whose exact match reaches `target`, else None."""
  for e in sorted(events, key=lambda e: e["step"]):
    if e["split"] == "valid" and e["exact_match"] >= target:
      return e["step"]
  return None


def run_one(base, decoder, score, normalizer, workdir):
  from seq2seq_jax import trainer
  from seq2seq_jax.metric_writer import read_metrics
  config = copy.deepcopy(base)
  with config.unlocked():
    config.model.decoder.type = decoder
    config.model.attention.score = score
    config.model.attention.normalize = normalizer
    config.model.attention.topk = FLAGS.topk
    config.train.num_steps = FLAGS.steps
    config.train.eval_every = FLAGS.eval_every
    config.train.checkpoint_every = FLAGS.steps
    config.train.progress_bar = False
    config.eval.num_decode_examples = FLAGS.eval_examples
    config.eval.num_attention_plots = 0
  start = time.time()
  test = trainer.train_and_evaluate(config, workdir)
  events = read_metrics(workdir)
  return {
      "decoder": decoder, "score": score, "normalizer": normalizer,
      "topk": FLAGS.topk if normalizer == "topk" else None,
      "test_exact_match": test["exact_match"],
      "best_valid_exact_match": max(e["exact_match"] for e in events if e["split"] == "valid"),
      "steps_to_target": steps_to_target(events, FLAGS.target),
      "wall_seconds": round(time.time() - start, 1),
  }


def to_markdown(rows, command) -> str:
  lines = [f"`{command}`", "",
           f"| decoder | score | normalizer | test exact match | steps to {FLAGS.target:.0%} valid "
           "| best valid | wall s |", "|---|---|---|---|---|---|---|"]
  for r in rows:
    norm = r["normalizer"] + (f" (k={r['topk']})" if r["topk"] else "")
    reached = r["steps_to_target"] if r["steps_to_target"] is not None else f"not in {FLAGS.steps}"
    lines.append(f"| {r['decoder']} | {r['score']} | {norm} | {100 * r['test_exact_match']:.2f} % "
                 f"| {reached} | {100 * r['best_valid_exact_match']:.1f} % | {r['wall_seconds']:.0f} |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  absl_logging.set_verbosity(absl_logging.WARNING)
  command = "python -m seq2seq_jax.attention_sweep " + " ".join(sys.argv[1:])
  rows = []
  for decoder, score, normalizer in itertools.product(FLAGS.decoders, FLAGS.scores,
                                                      FLAGS.normalizers):
    name = f"{decoder}-{score}-{normalizer}"
    print(f"== {name}", flush=True)
    rows.append(run_one(FLAGS.config, decoder, score, normalizer,
                        os.path.join(FLAGS.workdir, name)))
    os.makedirs(os.path.dirname(FLAGS.out) or ".", exist_ok=True)
    with open(FLAGS.out + ".json", "w") as f:
      json.dump({"command": command, "rows": rows}, f, indent=1)
    with open(FLAGS.out + ".md", "w") as f:
      f.write(to_markdown(rows, command))
  print(to_markdown(rows, command))


if __name__ == "__main__":
  app.run(main)
