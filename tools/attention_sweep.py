"""Trains every attention decoder x score x normalizer on one task, over
several seeds, and tables held-out exact match (mean and range over the
seeds) and the steps each run needs to reach a target validation accuracy.

  python tools/attention_sweep.py --config=configs/reference.py \
      --workdir=runs/attention_sweep --out=docs/attention_sweep --seeds=0,1,2

Each (combination, seed) is an ordinary `train_and_evaluate` run of the base
config with a fixed step budget and frequent evaluation, in its own
workdir; reruns resume, so an interrupted sweep picks up where it stopped.
After every run it rewrites `<out>.json` (one row per run) and `<out>.md`
(one line per combination, with the command).
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout without installing

from seq2seq_jax import trainer  # noqa: E402
from seq2seq_jax.metric_writer import read_metrics  # noqa: E402
from seq2seq_jax.models.attention import NORMALIZERS, SCORES  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", os.path.join(ROOT, "configs", "reference.py"), "Base config.", lock_config=True)
flags.DEFINE_string("workdir", "runs/attention_sweep", "One sub-directory per run.")
flags.DEFINE_string("out", "docs/attention_sweep", "Results path prefix (.json and .md).")
flags.DEFINE_list("decoders", ["bahdanau", "luong"], "Attention decoders to sweep.")
flags.DEFINE_list("scores", list(SCORES), "Score functions to sweep.")
flags.DEFINE_list("normalizers", list(NORMALIZERS), "Normalizers to sweep.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds: each combination is trained once per seed.")
flags.DEFINE_integer("topk", 2, "k of the topk normalizer.")
flags.DEFINE_integer("steps", 400, "Training steps per run (the budget).")
flags.DEFINE_integer("eval_every", 50, "Validation interval: the resolution of 'steps to target'.")
flags.DEFINE_integer("eval_examples", 500, "Validation examples decoded at each evaluation.")
flags.DEFINE_float("target", 0.99, "Validation exact match that counts as reached.")
flags.DEFINE_list("merge", [], "Instead of training: combine the rows of these earlier --out "
                  ".json files (parts of one sweep run side by side) into --out.")


def steps_to_target(events: list, target: float):
  """First validation step whose exact match reaches `target`, else None."""
  for e in sorted(events, key=lambda e: e["step"]):
    if e["split"] == "valid" and e["exact_match"] >= target:
      return e["step"]
  return None


def run_one(base, decoder, score, normalizer, seed, workdir):
  config = copy.deepcopy(base)
  with config.unlocked():
    config.seed = seed
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
      "decoder": decoder, "score": score, "normalizer": normalizer, "seed": seed,
      "topk": FLAGS.topk if normalizer == "topk" else None,
      "test_exact_match": test["exact_match"],
      "test_examples": test["decoded_examples"],
      "best_valid_exact_match": max(e["exact_match"] for e in events if e["split"] == "valid"),
      "steps_to_target": steps_to_target(events, FLAGS.target),
      "wall_seconds": round(time.time() - start, 1),
  }


def to_markdown(rows, command) -> str:
  """One line per combination: test exact match as mean (min to max) over
  its seeds, and each seed's steps to the target."""
  seeds = sorted({r["seed"] for r in rows})
  lines = [f"`{command}`", "",
           f"| decoder | score | normalizer | test exact match, mean (min to max) over seeds "
           f"{', '.join(map(str, seeds))} | steps to {FLAGS.target:.0%} valid, per seed "
           "| mean wall s |", "|---|---|---|---|---|---|"]
  groups = {}
  for r in rows:
    groups.setdefault((r["decoder"], r["score"], r["normalizer"], r["topk"]), []).append(r)
  for (decoder, score, normalizer, topk), runs in groups.items():
    runs.sort(key=lambda r: r["seed"])
    em = [100 * r["test_exact_match"] for r in runs]
    reached = ", ".join(str(r["steps_to_target"]) if r["steps_to_target"] is not None else "not reached"
                        for r in runs)
    norm = normalizer + (f" (k={topk})" if topk else "")
    lines.append(f"| {decoder} | {score} | {norm} | {sum(em) / len(em):.2f} % "
                 f"({min(em):.2f} to {max(em):.2f}, {len(em)} seeds) | {reached} "
                 f"| {sum(r['wall_seconds'] for r in runs) / len(runs):.0f} |")
  return "\n".join(lines) + "\n"


def merge(paths) -> None:
  """Writes --out from the rows of several parts, in sweep order."""
  runs, commands = {}, []
  for path in paths:
    with open(path, encoding="utf-8") as f:
      part = json.load(f)
    for r in part["rows"]:
      # A run in two parts was trained in one and only re-evaluated (resumed
      # at its last step) in the other: keep the one that trained.
      key = (r["decoder"], r["score"], r["normalizer"], r["seed"])
      if key not in runs or r["wall_seconds"] > runs[key]["wall_seconds"]:
        runs[key] = r
    commands.append(part["command"])
  rows = list(runs.values())
  order = {c: k for k, c in enumerate(itertools.product(FLAGS.decoders, FLAGS.scores,
                                                        FLAGS.normalizers))}
  rows.sort(key=lambda r: (order[(r["decoder"], r["score"], r["normalizer"])], r["seed"]))
  command = " ; ".join(commands)
  with open(FLAGS.out + ".json", "w", encoding="utf-8") as f:
    json.dump({"command": command, "rows": rows}, f, indent=1)
  with open(FLAGS.out + ".md", "w", encoding="utf-8") as f:
    f.write(to_markdown(rows, command))


def main(argv):
  del argv
  absl_logging.set_verbosity(absl_logging.WARNING)
  if FLAGS.merge:
    merge(FLAGS.merge)
    return
  command = "python tools/attention_sweep.py " + " ".join(sys.argv[1:])
  rows = []
  for decoder, score, normalizer in itertools.product(FLAGS.decoders, FLAGS.scores,
                                                      FLAGS.normalizers):
    for seed in (int(s) for s in FLAGS.seeds):
      name = f"{decoder}-{score}-{normalizer}-seed{seed}"
      print(f"== {name}", flush=True)
      rows.append(run_one(FLAGS.config, decoder, score, normalizer, seed,
                          os.path.join(FLAGS.workdir, name)))
      os.makedirs(os.path.dirname(FLAGS.out) or ".", exist_ok=True)
      with open(FLAGS.out + ".json", "w", encoding="utf-8") as f:
        json.dump({"command": command, "rows": rows}, f, indent=1)
      with open(FLAGS.out + ".md", "w", encoding="utf-8") as f:
        f.write(to_markdown(rows, command))
  print(to_markdown(rows, command))


if __name__ == "__main__":
  app.run(main)
