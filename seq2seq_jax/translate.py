"""Translate with a trained workdir.

  python -m seq2seq_jax.translate --workdir=runs/default "tuesday, march 3 2020"
  echo "3 mar. 2020" | python -m seq2seq_jax.translate --workdir=runs/default --beam_size=4

Reads sentences from the arguments, or one per line from standard input,
and prints one translation per line (with --nbest=N, N lines
"rank<TAB>score<TAB>translation" per sentence and a blank line after each).
Tokens outside the vocabulary become <unk> and are reported on stderr.
"""

import sys

from absl import app, flags
from absl import logging as absl_logging

from seq2seq_jax.cli import fail

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "runs/default", "A workdir written by train.py.")
flags.DEFINE_integer("step", None, "Checkpoint step (default: the best validation's if "
                     "train.keep_best kept it, else the newest).")
flags.DEFINE_integer("beam_size", 1, "1 = greedy decoding; more = beam search.")
flags.DEFINE_float("alpha", 0.6, "Length-penalty exponent for beam search.")
flags.DEFINE_enum("length_penalty", "gnmt", ["gnmt", "normalize", "none"],
                  "gnmt: ((5+len)/6)^alpha; normalize: len^alpha; none.")
flags.DEFINE_integer("nbest", 1, "Hypotheses printed per sentence (<= beam_size).")
flags.DEFINE_integer("max_len", 0, "Most output tokens; 0 = the config's last target bucket.")
flags.DEFINE_integer("batch_size", 64, "Sentences decoded together.")
flags.DEFINE_string("attention_png", None, "Write the attention heat map of the first sentence here.")


def main(argv):
  absl_logging.set_verbosity(absl_logging.WARNING)
  if FLAGS.beam_size < 1 or FLAGS.nbest < 1 or FLAGS.nbest > FLAGS.beam_size and FLAGS.nbest > 1:
    fail("--beam_size must be >= 1 and --nbest between 1 and --beam_size")
  sentences = argv[1:] or [line.rstrip("\n") for line in sys.stdin]
  from seq2seq_jax import host, plotting
  host.configure()  # before JAX's first computation
  from seq2seq_jax.errors import UserError
  from seq2seq_jax.inference import load_workdir
  try:
    trained = load_workdir(FLAGS.workdir, FLAGS.step)
  except UserError as e:
    fail(str(e))
  results = []
  for start in range(0, len(sentences), FLAGS.batch_size):
    chunk = sentences[start:start + FLAGS.batch_size]
    try:  # an input or --max_len past a Transformer's positions
      results.extend(trained.translate(chunk, FLAGS.max_len, FLAGS.beam_size, FLAGS.alpha,
                                       FLAGS.length_penalty, FLAGS.nbest))
    except UserError as e:
      fail(str(e))
  for line_no, r in enumerate(results, 1):
    if r["unknown"]:
      print(f"warning: input {line_no}: {r['unknown']} token(s) not in the vocabulary, "
            "read as <unk>", file=sys.stderr)
    if not r["src_tokens"]:
      print(f"warning: input {line_no}: empty, output left empty", file=sys.stderr)
    if FLAGS.nbest > 1:
      for rank, (hyp, score) in enumerate(r["nbest"], 1):
        print(f"{rank}\t{score:.4f}\t{hyp}")
      print()
    else:
      print(r["hypothesis"])
  if FLAGS.attention_png and results:
    r = results[0]
    if r["attention"] is None:
      fail("this model has no attention to draw")
    weights = r["attention"]
    if weights.ndim == 3:
      plotting.save_heads_png(FLAGS.attention_png, weights.transpose(1, 0, 2),
                              r["src_tokens"], r["tgt_tokens"], title=r["source"])
    else:
      plotting.save_attention_png(FLAGS.attention_png, [{
          "weights": weights, "src_tokens": r["src_tokens"], "tgt_tokens": r["tgt_tokens"],
          "title": r["source"]}])
    print(f"wrote {FLAGS.attention_png}", file=sys.stderr)


if __name__ == "__main__":
  app.run(main)
