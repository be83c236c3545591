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

import json
import time

from absl import app, flags
from absl import logging as absl_logging

from seq2seq_jax.cli import fail

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "runs/default", "A workdir written by train.py.")
flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest).")
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
                      repeats: int = 3) -> dict:
  """Decodes `split` of a trained workdir with each beam size.

  Returns {"step", "split", "examples" (distinct sources scored), "results":
  [{"beam_size", "exact_match", "bleu", "chrf", ("wer", "per" for cmudict),
  "sentences_per_s", "tokens_per_s", "compile_s", "decode_s"}],
  "bleu_signature", "chrf_signature"}. Throughput counts every example
  decoded (a source with several references is in the batches once per pair).
  """
  import jax
  import numpy as np

  from seq2seq_jax import decoding, metrics
  from seq2seq_jax.inference import load_workdir
  from seq2seq_jax.trainer import Run, references_by_source

  trained = load_workdir(workdir, step)
  config = trained.config
  if batch_size:
    config.eval.batch_size = batch_size
  run = Run(config, workdir)  # rebuilds the splits; reads the saved tokenizers
  batcher = run.eval_batches[split]
  batches = list(batcher.iterate_epoch())
  references = references_by_source(run.splits[split], run.tgt_tok)
  g2p = config.data.source == "cmudict"
  params = trained.params
  out = {"step": trained.step, "split": split, "results": []}
  for beam in beam_sizes:
    decode = decoding.jit_decode(run.model, run.max_decode_len, int(beam), alpha, penalty)
    start = time.perf_counter()
    for shape in {b["src"].shape for b in batches}:  # one compile per batch shape
      b = next(b for b in batches if b["src"].shape == shape)
      jax.block_until_ready(decode(params, b["src"], b["src_len"]))
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(max(1, repeats)):
      start = time.perf_counter()
      results = [decode(params, b["src"], b["src_len"]) for b in batches]
      results = jax.device_get(results)
      times.append(time.perf_counter() - start)
    hyps, refs, tokens, decoded = [], [], 0, 0
    for b, r in zip(batches, results):
      for i, idx in enumerate(b["index"]):
        if idx < 0:
          continue
        tokens += int(r["lengths"][i])
        decoded += 1
        if int(idx) in references:  # score each distinct source once
          hyps.append(run.tgt_tok.decode(r["tokens"][i][:int(r["lengths"][i])]))
          refs.append(references[int(idx)])
    seconds = float(np.median(times))
    scores = metrics.sequence_metrics(hyps, refs, metrics.bleu_tokenizer(run.tgt_tok.kind), g2p)
    out["bleu_signature"] = scores.pop("bleu_signature")
    out["chrf_signature"] = scores.pop("chrf_signature")
    out["examples"] = len(hyps)
    out["results"].append({
        "beam_size": int(beam), **scores, "sentences_per_s": decoded / seconds,
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
  from seq2seq_jax.errors import UserError
  try:
    out = evaluate_decoders(FLAGS.workdir, FLAGS.split, beams, FLAGS.alpha, FLAGS.length_penalty,
                            FLAGS.step, FLAGS.batch_size, FLAGS.repeats)
  except UserError as e:
    fail(str(e))
  print(f"{FLAGS.workdir} step {out['step']}, {out['split']} split, {out['examples']} examples")
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
    with open(FLAGS.json, "w", encoding="utf-8") as f:
      json.dump(out, f, indent=2)
      f.write("\n")


if __name__ == "__main__":
  app.run(main)
