"""Decode and score held-out data: the one evaluation path.

Training's periodic and final evaluation (`Evaluator`), `python -m
seq2seq_jax.evaluate` (`decode_split` + `score`) and
`inference.Trained.translate` (`decode_batches`) all decode through
`decoding.jit_decode`, with one decode-length rule
(`batching.decode_length`) and batches of fixed shapes
(`batching.fill_batch`), so a workdir gives the same hypotheses whichever
entry point decodes it, and each batch shape compiles once per decoder.

Held-out splits are scored whole: `too_long` filters training only, and
every valid/test example goes into one batch width wide enough for all of
them (`batching.eval_width`).
"""

from typing import Callable, Iterable, Iterator, Optional, Sequence

import jax
import numpy as np

from seq2seq_jax import decoding, metrics, training
from seq2seq_jax.data import batching, pipeline


def references_by_source(pairs, tgt_tok) -> dict:
  """{index of a source's first pair: [its targets, detokenized as the model
  would print them, in order]}: the examples decoding scores, one per
  distinct source, with every reference translation of that source."""
  first, refs = {}, {}
  for i, (src, tgt) in enumerate(pairs):
    j = first.setdefault(src, i)
    ref = tgt_tok.join(tgt_tok.split(tgt))
    if ref not in refs.setdefault(j, []):
      refs[j].append(ref)
  return refs


class HeldOut:
  """One held-out split, encoded and batched for evaluation: `pairs`,
  `references` (see `references_by_source`) and `batches` (one shape,
  `width` = (source, target) tokens, unshuffled, nothing dropped)."""

  def __init__(self, pairs: Sequence[tuple], src_tok, tgt_tok, width: tuple, batch_size: int):
    self.pairs, self.width = pairs, tuple(width)
    self.references = references_by_source(pairs, tgt_tok)
    self.batches = pipeline.Batches(pairs, batching.pair_encoder(src_tok, tgt_tok),
                                    (self.width[0],), (self.width[1],), batch_size=batch_size,
                                    seed=0, shuffle=False, too_long="error")


def held_out(splits: dict, src_tok, tgt_tok, data_config, batch_size: int) -> dict:
  """{name: HeldOut} for the given held-out splits ({name: pairs}), all at
  one width: the smallest bucket boundary (or power of two past the last)
  that holds every source and every target + <eos> among them."""
  src_b = batching.parse_boundaries(data_config.src_boundaries)
  tgt_b = batching.parse_boundaries(data_config.tgt_boundaries)
  pairs = [p for split in splits.values() for p in split]
  src_ids, tgt_ids = batching.encode_pairs(pairs, src_tok, tgt_tok)
  width = (batching.eval_width(map(len, src_ids), src_b),
           batching.eval_width((len(t) + 1 for t in tgt_ids), tgt_b))
  return {name: HeldOut(split, src_tok, tgt_tok, width, batch_size)
          for name, split in splits.items()}


def decode_batches(decode: Callable, params, batches: Iterable[dict],
                   wait: Optional[Callable] = None) -> Iterator[tuple]:
  """(batch, decoded on the host) for each batch. `decode` is a
  `decoding.jit_decode` program; `wait(batch)`, if given, is called first
  (training waits there for a program compiled ahead)."""
  for batch in batches:
    if wait is not None:
      wait(batch)
    yield batch, jax.device_get(decode(params, batch["src"], batch["src_len"]))


def hypothesis(result: dict, row: int, beam: int = 0) -> np.ndarray:
  """Token ids of one decoded row's `beam`-th hypothesis, without padding."""
  return result["tokens"][row, beam][:int(result["lengths"][row, beam])]


def decode_split(decode: Callable, params, split: HeldOut, tgt_tok, first: int = 0,
                 wait: Optional[Callable] = None) -> list[dict]:
  """Decodes each distinct source of `split` once (those among its first
  `first` examples when first > 0), in example order: dicts with "index",
  "source", "references", "reference" (the first), "hypothesis",
  "hyp_ids", "attention" (of the best, or None), "src_len"."""
  batches = split.batches.iterate_epoch()
  if first > 0:
    batches = (b for b in batches if np.any((b["index"] >= 0) & (b["index"] < first)))
  return hypotheses_of(split, decode_batches(decode, params, batches, wait), tgt_tok, first)


def hypotheses_of(split: HeldOut, decoded_batches: Iterable[tuple], tgt_tok,
                  first: int = 0) -> list[dict]:
  """`decode_split`'s dicts from (batch, decoded) pairs of `split`."""
  refs = split.references
  out = []
  for batch, result in decoded_batches:
    for i, idx in enumerate(int(x) for x in batch["index"]):
      if idx not in refs or (first > 0 and idx >= first):
        continue
      ids = hypothesis(result, i)
      out.append({
          "index": idx, "source": split.pairs[idx][0], "references": refs[idx],
          "reference": refs[idx][0], "hypothesis": tgt_tok.decode(ids), "hyp_ids": ids,
          "attention": None if result["attention"] is None else result["attention"][i],
          "src_len": int(batch["src_len"][i]),
      })
  out.sort(key=lambda d: d["index"])
  return out


def score(decoded: list[dict], tgt_tok, g2p: bool) -> dict:
  """Exact match, BLEU, chrF (and WER/PER for g2p) of decoded examples
  against all their references, plus "decoded_examples": how many."""
  values = metrics.sequence_metrics([d["hypothesis"] for d in decoded],
                                    [d["references"] for d in decoded],
                                    metrics.bleu_tokenizer(tgt_tok.kind), g2p=g2p)
  values["decoded_examples"] = len(decoded)
  return values


class Evaluator:
  """Training's evaluation of the held-out splits: teacher-forced loss,
  perplexity and token accuracy over every pair, and the config's decoder
  (eval.beam_size) scored on every distinct source."""

  def __init__(self, model, splits: dict, tgt_tok, eval_config, max_decode_len: int, g2p: bool):
    self.splits, self.tgt_tok, self.g2p = splits, tgt_tok, g2p
    self.eval_step = training.jit_eval_step(model.apply)
    self.decode = decoding_program(model, max_decode_len, eval_config)
    self._ahead = None

  def compile_ahead(self, ahead, params) -> None:
    """Starts compiling the evaluation programs (one batch shape for every
    held-out split) in `ahead` (a `compile_ahead.Ahead`); params may be
    shapes (`jax.ShapeDtypeStruct`)."""
    self._ahead = ahead
    split = next(iter(self.splits.values()))
    shape = split.width
    batch = model_batch(batching.fill_batch(shape, split.batches.batch_size, ()))
    ahead.submit(("eval_step", shape), self.eval_step, params, batch)
    ahead.submit(("decode", shape), self.decode, params, batch["src"], batch["src_len"])

  def _waiter(self, program: str) -> Callable:
    def wait(batch):
      if self._ahead is not None:
        self._ahead.wait((program, batch["src"].shape[1:] + batch["tgt_in"].shape[1:]))
    return wait

  def decode_first(self, params, split: str, count: int) -> list[dict]:
    """Decoded examples of the split's first `count` examples."""
    return decode_split(self.decode, params, self.splits[split], self.tgt_tok, first=count,
                        wait=self._waiter("decode"))

  def __call__(self, params, split: str, max_decode: int = 0) -> tuple[dict, list[dict]]:
    """Returns (metrics, decoded examples). The teacher-forced metrics use
    every pair; each distinct source is decoded once and scored against all
    its references (only those among the first `max_decode` examples when
    max_decode > 0). "examples" counts the pairs, "decoded_examples" the
    sources decoded."""
    held = self.splits[split]
    sums = {}
    wait = self._waiter("eval_step")
    for batch in held.batches.iterate_epoch():
      wait(batch)
      out = jax.device_get(self.eval_step(params, model_batch(batch)))
      sums = {k: sums.get(k, 0.0) + float(v) for k, v in out.items()}
    decoded = decode_split(self.decode, params, held, self.tgt_tok, first=max_decode,
                           wait=self._waiter("decode"))
    values = training.summarize(sums)
    values["examples"] = int(held.batches.num_examples)
    values.update(score(decoded, self.tgt_tok, self.g2p))
    return values, decoded


def decoding_program(model, max_decode_len: int, eval_config):
  """The config's decoder (eval.beam_size, alpha, length_penalty), compiled."""
  return decoding.jit_decode(model, max_decode_len, eval_config.beam_size, eval_config.alpha,
                             eval_config.length_penalty)


def model_batch(batch: dict) -> dict:
  """The arrays of a batch that the model and the train step read."""
  return {k: batch[k] for k in batching.MODEL_KEYS}
