"""Loading a trained workdir for inference: config, tokenizers, model, weights.

  trained = load_workdir("runs/default")
  out = trained.translate(["tuesday, march 3 2020"])
  ensemble = load_ensemble(["runs/a", "runs/b"])  # decoded as one model

Only what inference needs is read; nothing in the workdir is written.
"""

import dataclasses
import json
import os
from typing import Optional, Sequence

import jax
import ml_collections
import numpy as np

from seq2seq_jax import config_defaults, decoding, evaluation, models, parallel
from seq2seq_jax.checkpoints import has_checkpoints, restore_params
from seq2seq_jax.data import batching, tokenizers
from seq2seq_jax.errors import CheckpointError


@dataclasses.dataclass
class Trained:
  config: ml_collections.ConfigDict
  src_tok: tokenizers.CharTokenizer
  tgt_tok: tokenizers.CharTokenizer
  model: object
  params: dict
  step: int

  @property
  def max_decode_len(self) -> int:
    """Decoding length when none is given: the one rule of every entry point."""
    return batching.decode_length(self.config.eval.max_decode_len, self.config.data.tgt_boundaries)

  def _decoder(self, max_len: int, beam_size: int, alpha: float, penalty: str):
    """`decoding.jit_decode` for these settings, kept so that later calls
    reuse its compiled programs."""
    key = (max_len, beam_size, alpha, penalty)
    cache = self.__dict__.setdefault("_decoders", {})
    if key not in cache:
      cache[key] = decoding.jit_decode(self.model, max_len, beam_size, alpha, penalty)
    return cache[key]

  def translate(self, sentences: Sequence[str], max_len: int = 0, beam_size: int = 1,
                alpha: float = 0.6, penalty: str = "gnmt", nbest: int = 1) -> list[dict]:
    """Translations, one dict per sentence: "source", "hypothesis" (the best),
    "nbest" (a list of (hypothesis, score) with beam search, best first),
    "src_tokens", "tgt_tokens", "attention" ([tgt, src], or [tgt, heads, src]
    for multi-head models, or None), "unknown" (source tokens mapped to <unk>).
    An empty input gives an empty hypothesis.

    beam_size 1 is greedy decoding; larger runs beam search. An input or a
    max_len longer than the model has positions for (a Transformer's
    max_len) raises LengthError: nothing is cut or clamped.
    """
    max_len = max_len or self.max_decode_len
    ids = [self.src_tok.encode(s) for s in sentences]
    for sentence, i in zip(sentences, ids):  # named here, not as a batch's width
      shown = sentence if len(sentence) <= 40 else sentence[:40] + "..."
      decoding.check_positions(self.model, len(i), f"the input {shown!r} ({len(i)} tokens)")
    # Decoded in batches of fixed shapes: rows padded to a power of two (at
    # most eval.batch_size) and sources to a length bucket, with filler rows
    # (src_len 0, finished from the start). So translating many lines
    # compiles once per batch shape and decoder, never once per batch.
    decode = self._decoder(max_len, beam_size, alpha, penalty)
    src_boundaries = batching.parse_boundaries(self.config.data.src_boundaries)
    limit = max(1, int(self.config.eval.batch_size))

    def batches():
      for start in range(0, len(ids), limit):
        chunk = ids[start:start + limit]
        rows = min(limit, 1 << max(3, (len(chunk) - 1).bit_length()))
        width = batching.eval_width((len(i) for i in chunk), src_boundaries)
        yield batching.fill_batch((width, 1), rows, ((i, (), r) for r, i in enumerate(chunk)))

    results = []
    for batch, out in evaluation.decode_batches(decode, self.params, batches()):
      for row in range(int(np.sum(batch["index"] >= 0))):
        n = len(results)
        results.append(self._result(sentences[n], ids[n], out, row, beam_size > 1, nbest))
    return results

  def _result(self, sentence: str, ids, out: dict, row: int, scored: bool, nbest: int) -> dict:
    count = min(nbest, out["tokens"].shape[1])
    common = {"source": sentence, "src_tokens": self.src_tok.split(sentence),
              "unknown": self.src_tok.count_unknown(sentence)}
    if not ids:  # nothing to translate: an empty input stays empty
      return {**common, "hypothesis": "", "nbest": [("", None)] * count, "tgt_tokens": [],
              "attention": None}
    hyp = evaluation.hypothesis(out, row)
    return {
        **common,
        "hypothesis": self.tgt_tok.decode(hyp),
        "nbest": [(self.tgt_tok.decode(evaluation.hypothesis(out, row, j)),
                   float(out["scores"][row, j]) if scored else None) for j in range(count)],
        "tgt_tokens": [self.tgt_tok.vocab.id_to_token(int(t)) for t in hyp],
        "attention": None if out["attention"] is None
                     else out["attention"][row][:len(hyp), ..., :len(ids)],
    }


def with_defaults(saved: dict) -> ml_collections.ConfigDict:
  """A workdir's saved config on top of the package's current defaults
  (`config_defaults`), so a workdir written before a field existed reads
  that field's default (which is chosen to keep the old behaviour)."""
  config = config_defaults.get_config()

  def merge(node, values):
    for key, value in values.items():
      if isinstance(value, dict) and key in node and isinstance(node[key], ml_collections.ConfigDict):
        merge(node[key], value)
      else:
        with node.ignore_type():
          node[key] = value

  merge(config, saved)
  return config


def load_workdir(workdir: str, step: Optional[int] = None) -> Trained:
  """Reads a workdir written by `train.py`: checkpoint `step`, else the best
  validation's parameters if the run kept them (train.keep_best), else the
  newest checkpoint. Raises CheckpointError when it has no config,
  tokenizers or checkpoint."""
  workdir = os.path.abspath(workdir)
  config_path = os.path.join(workdir, "config.json")
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if not os.path.isfile(config_path) or not has_checkpoints(ckpt_dir):
    raise CheckpointError(f"{workdir} has no trained model (config.json and checkpoints/ are "
                          "written by train.py)")
  with open(config_path, encoding="utf-8") as f:
    config = with_defaults(json.load(f))
  src_tok = tokenizers.load_tokenizer(os.path.join(workdir, "src_tokenizer.json"))
  tgt_tok = tokenizers.load_tokenizer(os.path.join(workdir, "tgt_tokenizer.json"))
  try:
    model = models.build_model(config.model, len(src_tok.vocab), len(tgt_tok.vocab))
  except (AttributeError, KeyError) as e:
    raise CheckpointError(f"{config_path} lacks the config field {str(e).strip(chr(34))} "
                          "(written by an older version of seq2seq-jax?)") from None
  # The parameters alone, restored into the shapes this model expects.
  dummy = np.ones((1, 1), np.int32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), dummy, np.ones(1, np.int32),
                                             dummy)["params"])
  # train.keep_best kept the best validation's parameters apart: they are
  # what the run's test score measured, so they are what is loaded, unless
  # a step is asked for.
  best_dir = os.path.join(workdir, "best")
  if step is None and has_checkpoints(best_dir):
    ckpt_dir = best_dir
  params, step = restore_params(ckpt_dir, parallel.DataParallel.eval_params_shape(shapes), step)
  return Trained(config, src_tok, tgt_tok, model, params, step)


def load_ensemble(workdirs: Sequence[str], step: Optional[int] = None) -> Trained:
  """Several workdirs as one `Trained` whose model is their `Ensemble`
  (each step's mean log-probabilities; see models/ensemble.py): the first
  workdir's config and tokenizers, each workdir's parameters as
  `load_workdir` picks them (`step` applies to all). One workdir is just
  `load_workdir`. The workdirs must share their tokenizers, since the
  members' log-probabilities are added token by token: anything else is
  one CheckpointError naming the two workdirs."""
  if len(workdirs) == 1:
    return load_workdir(workdirs[0], step)
  for workdir in workdirs[1:]:  # checked before any parameters are read
    for side in ("src", "tgt"):
      paths = [os.path.join(os.path.abspath(w), f"{side}_tokenizer.json")
               for w in (workdirs[0], workdir)]
      if not all(os.path.isfile(p) for p in paths):
        continue  # not a workdir: load_workdir below says so
      saved = []
      for path in paths:
        with open(path, encoding="utf-8") as f:
          saved.append(json.load(f))
      if saved[0] != saved[1]:
        raise CheckpointError(
            f"cannot decode {workdirs[0]} and {workdir} as one ensemble: their "
            f"{'source' if side == 'src' else 'target'} tokenizers differ ({paths[0]} against "
            f"{paths[1]}); an ensemble adds log-probabilities token by token")
  members = [load_workdir(w, step) for w in workdirs]
  first = members[0]
  model = models.Ensemble(tuple(m.model for m in members))
  params = {f"members_{i}": m.params for i, m in enumerate(members)}
  return Trained(first.config, first.src_tok, first.tgt_tok, model, params, first.step)
