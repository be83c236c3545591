"""Evaluate a trained workdir on its valid or test split, with several decoders.

  python -m seq2seq_jax.evaluate --workdir=runs/default --beam_sizes=1,4
  python -m seq2seq_jax.evaluate --workdir=runs/default --split=valid --json=out.json

The split is rebuilt from the workdir's own config.json (the same examples
`train.py` evaluated), decoded with greedy search (beam size 1) and beam
search of each other size, and scored: exact match, BLEU and chrF, plus the
decoding throughput. Throughput counts only decoding: every batch shape is
compiled (and timed as "compile") before the timed pass, and the timed pass
ends with the results on the host.
"""

import time

from absl import app, flags
from absl import logging as absl_logging

from seq2seq_jax.cli import fail, write_json

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "runs/default", "A workdir written by train.py.")
flags.DEFINE_list("ensemble", [], "More workdirs, with the same tokenizers, decoded together "
                  "with --workdir as one ensemble (mean log-probabilities at each step); "
                  "the split comes from --workdir's config.")
flags.DEFINE_integer("step", None, "Checkpoint step (default: the best validation's if "
                     "train.keep_best kept it, else the newest).")
flags.DEFINE_enum("split", "test", ["valid", "test"], "Which held-out split to decode.")
flags.DEFINE_list("beam_sizes", ["1", "4"], "Beam sizes to evaluate; 1 = greedy.")
flags.DEFINE_float("alpha", 0.6, "Length-penalty exponent for beam search.")
flags.DEFINE_enum("length_penalty", "gnmt", ["gnmt", "normalize", "none"],
                  "gnmt: ((5+len)/6)^alpha; normalize: len^alpha; none.")
flags.DEFINE_integer("batch_size", 0, "Sentences decoded together (0 = the config's eval.batch_size).")
flags.DEFINE_integer("repeats", 3, "Timed passes over the split; the median is reported.")
flags.DEFINE_string("json", None, "Also write the results to this JSON file.")


def evaluate_decoders(workdir: str, split: str = "test", beam_sizes=(1, 4), alpha: float = 0.6,
                      penalty: str = "gnmt", step=None, batch_size: int = 0,
                      repeats: int = 3, ensemble=()) -> dict:
  """Decodes `split` of a trained workdir with each beam size.

  Returns {"step", "split", "examples" (distinct sources scored), "results":
  [{"beam_size", "exact_match", "bleu", "chrf", ("wer", "per" for cmudict),
  "sentences_per_s", "tokens_per_s", "compile_s", "decode_s"}],
  "bleu_signature", "chrf_signature"}. Throughput counts every example
  decoded (a source with several references is in the batches once per pair).
  ensemble: more workdirs decoded together with `workdir`
  (`inference.load_ensemble`).
  """
  import jax
  import numpy as np

  from seq2seq_jax import decoding, evaluation
  from seq2seq_jax.data import sources
  from seq2seq_jax.inference import load_ensemble

  trained = load_ensemble([workdir, *ensemble], step)
  config = trained.config
  # Only the scored split is read: no training batches, no pass over a
  # streamed training corpus.
  pairs = sources.load_splits(config.data, only=(split,))[split]
  held = evaluation.held_out({split: pairs}, trained.src_tok, trained.tgt_tok, config.data,
                             batch_size or config.eval.batch_size)[split]
  batches = list(held.batches.iterate_epoch())
  if not batches:
    from seq2seq_jax.errors import DataError
    raise DataError(f"the {split} split of {workdir} has no examples")
  g2p = config.data.source == "cmudict"
  params = trained.params
  out = {"step": trained.step, "split": split, "results": []}
  for beam in beam_sizes:
    decode = decoding.jit_decode(trained.model, trained.max_decode_len, int(beam), alpha, penalty)
    start = time.perf_counter()
    jax.block_until_ready(decode(params, batches[0]["src"], batches[0]["src_len"]))  # one shape
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(max(1, repeats)):
      start = time.perf_counter()
      results = jax.device_get([decode(params, b["src"], b["src_len"]) for b in batches])
      times.append(time.perf_counter() - start)
    tokens = sum(int(np.sum(r["lengths"][b["index"] >= 0, 0])) for r, b in zip(results, batches))
    rows = sum(int(np.sum(b["index"] >= 0)) for b in batches)
    # Scored exactly as training scores, from the last timed pass's outputs.
    decoded = evaluation.hypotheses_of(held, zip(batches, results), trained.tgt_tok)
    seconds = float(np.median(times))
    scores = evaluation.score(decoded, trained.tgt_tok, g2p)
    out["bleu_signature"] = scores.pop("bleu_signature")
    out["chrf_signature"] = scores.pop("chrf_signature")
    out["examples"] = scores["decoded_examples"]
    out["results"].append({
        "beam_size": int(beam), **scores, "sentences_per_s": rows / seconds,
        "tokens_per_s": tokens / seconds, "compile_s": compile_s, "decode_s": seconds})
  return out


def main(argv):
  absl_logging.set_verbosity(absl_logging.WARNING)
  if len(argv) > 1:
    fail(f"unexpected arguments {argv[1:]}")
  try:
    beams = [int(b) for b in FLAGS.beam_sizes]
  except ValueError:
    fail(f"--beam_sizes must be integers, got {','.join(FLAGS.beam_sizes)}")
  if not beams or min(beams) < 1:
    fail("--beam_sizes must be integers >= 1")
  if FLAGS.batch_size < 0 or FLAGS.repeats < 1:
    fail("--batch_size must be >= 0 and --repeats >= 1")
  from seq2seq_jax import host
  from seq2seq_jax.errors import UserError
  host.configure()  # before JAX's first computation
  try:
    out = evaluate_decoders(FLAGS.workdir, FLAGS.split, beams, FLAGS.alpha, FLAGS.length_penalty,
                            FLAGS.step, FLAGS.batch_size, FLAGS.repeats, FLAGS.ensemble)
  except UserError as e:
    fail(str(e))
  together = f" ensembled with {', '.join(FLAGS.ensemble)}" if FLAGS.ensemble else ""
  print(f"{FLAGS.workdir} step {out['step']}{together}, {out['split']} split, "
        f"{out['examples']} examples")
  g2p = "wer" in out["results"][0]
  print(f"{'beam':>4}  {'exact match':>11}  " + (f"{'WER':>7}  {'PER':>7}  " if g2p else "")
        + f"{'BLEU':>6}  {'chrF':>6}  {'sent/s':>8}  {'tok/s':>9}  {'compile s':>9}")
  for r in out["results"]:
    print(f"{r['beam_size']:>4}  {100 * r['exact_match']:>10.2f}%  "
          + (f"{100 * r['wer']:>6.2f}%  {100 * r['per']:>6.2f}%  " if g2p else "")
          + f"{r['bleu']:>6.2f}  {r['chrf']:>6.2f}  {r['sentences_per_s']:>8.0f}  "
          f"{r['tokens_per_s']:>9.0f}  {r['compile_s']:>9.1f}")
  print(f"BLEU: {out['bleu_signature']}")
  if FLAGS.json:
    write_json(FLAGS.json, out)


if __name__ == "__main__":
  app.run(main)
