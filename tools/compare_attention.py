"""Draws the attention of several trained workdirs on the same sentences,
side by side (one column per workdir, one row per sentence).

  python tools/compare_attention.py --out=docs/normalizers.png \
      --workdirs=runs/attention_sweep/bahdanau-additive-softmax-seed0,runs/attention_sweep/bahdanau-additive-sparsemax-seed0 \
      "the 3rd of march 2020" "03/03/20"
"""

import os
import sys

from absl import app, flags
from absl import logging as absl_logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # a checkout

from seq2seq_jax.cli import fail  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("workdirs", [], "Trained workdirs to compare.")
flags.DEFINE_string("out", "attention_comparison.png", "PNG to write.")
flags.DEFINE_list("labels", [], "Column titles (default: the workdir names).")


def main(argv):
  absl_logging.set_verbosity(absl_logging.WARNING)
  sentences = argv[1:]
  if not FLAGS.workdirs or not sentences:
    fail("give --workdirs and at least one sentence")
  from seq2seq_jax import plotting
  from seq2seq_jax.errors import UserError
  from seq2seq_jax.inference import load_workdir
  labels = FLAGS.labels or [os.path.basename(os.path.normpath(w)) for w in FLAGS.workdirs]
  columns = []
  try:
    for workdir in FLAGS.workdirs:
      columns.append(load_workdir(workdir).translate(sentences))
  except UserError as e:
    fail(str(e))
  examples = []
  for row in range(len(sentences)):
    for label, column in zip(labels, columns):
      result = column[row]
      if result["attention"] is None:
        fail(f"{label} has no attention to draw")
      examples.append({"weights": result["attention"], "src_tokens": result["src_tokens"],
                       "tgt_tokens": result["tgt_tokens"],
                       "title": f"{label}: {result['hypothesis']}"})
  plotting.save_attention_png(FLAGS.out, examples, ncols=len(columns))
  print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
  app.run(main)
