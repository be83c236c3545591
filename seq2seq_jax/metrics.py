"""Sequence-level metrics on detokenized text: exact match, BLEU/chrF via
sacrebleu (its signature is returned so a reported score can be reproduced),
and the G2P error rates (word and phoneme error rate).

References may be given one per hypothesis (a list of strings) or several
per hypothesis (a list of lists of strings, of any lengths >= 1): a
hypothesis is an exact match when it equals any of its references, BLEU and
chrF use all of them, and the phoneme error rate uses the closest one.

Token-level metrics (loss, perplexity, token accuracy) live in training.py,
since they are computed from logits inside the jitted steps.
"""

from typing import Sequence, Union

import sacrebleu

References = Union[Sequence[str], Sequence[Sequence[str]]]


def _reference_lists(hypotheses: Sequence[str], references: References) -> list:
  if len(hypotheses) != len(references):
    raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
  lists = [[r] if isinstance(r, str) else list(r) for r in references]
  if any(not refs for refs in lists):
    raise ValueError("every hypothesis needs at least one reference")
  return lists


def _reference_streams(hypotheses, references) -> list:
  """sacrebleu's layout: stream j holds every segment's j-th reference
  (None where a segment has fewer)."""
  lists = _reference_lists(hypotheses, references)
  width = max((len(refs) for refs in lists), default=1)
  return [[refs[j] if j < len(refs) else None for refs in lists] for j in range(width)]


def exact_match(hypotheses: Sequence[str], references: References) -> float:
  """Fraction of hypotheses equal to (any of) their reference(s); 0.0 for none."""
  lists = _reference_lists(hypotheses, references)
  if not lists:
    return 0.0
  return sum(h in refs for h, refs in zip(hypotheses, lists)) / len(lists)


def edit_distance(a: Sequence, b: Sequence) -> int:
  """Levenshtein distance (unit-cost insertions, deletions, substitutions)."""
  previous = list(range(len(b) + 1))
  for i, x in enumerate(a, 1):
    current = [i]
    for j, y in enumerate(b, 1):
      current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
    previous = current
  return previous[-1]


def g2p_error_rates(hypotheses: Sequence[str], references: References) -> tuple[float, float]:
  """(word error rate, phoneme error rate) of space-separated phoneme strings.

  WER: the fraction of words whose prediction matches none of the word's
  reference pronunciations. PER: the summed edit distance to each word's
  closest reference (fewest edits; on ties the shorter reference) over the
  summed lengths of those references. Both in [0, 1] for WER, >= 0 for PER.
  """
  lists = _reference_lists(hypotheses, references)
  if not lists:
    return 0.0, 0.0
  edits = length = 0
  for hyp, refs in zip(hypotheses, lists):
    hyp_tokens = hyp.split()
    best = min(((edit_distance(hyp_tokens, r.split()), len(r.split())) for r in refs))
    edits += best[0]
    length += best[1]
  return 1.0 - exact_match(hypotheses, lists), edits / max(length, 1)


def bleu_tokenizer(kind: str) -> str:
  """sacrebleu's tokenizer for a target tokenizer kind: character-level
  targets (dates, reversed strings) are scored over characters, words with
  the standard 13a tokenization."""
  return "char" if kind == "char" else "13a"


def corpus_bleu(hypotheses: Sequence[str], references: References,
                tokenize: str = "13a") -> tuple[float, str]:
  """Corpus BLEU (0-100) and sacrebleu's signature string."""
  bleu = sacrebleu.metrics.BLEU(tokenize=tokenize)
  score = bleu.corpus_score(list(hypotheses), _reference_streams(hypotheses, references))
  return float(score.score), str(bleu.get_signature())


def corpus_chrf(hypotheses: Sequence[str], references: References) -> tuple[float, str]:
  """Corpus chrF (0-100) and sacrebleu's signature string."""
  chrf = sacrebleu.metrics.CHRF()
  score = chrf.corpus_score(list(hypotheses), _reference_streams(hypotheses, references))
  return float(score.score), str(chrf.get_signature())


def sequence_metrics(hypotheses: Sequence[str], references: References, bleu_tokenize: str,
                     g2p: bool = False) -> dict:
  """Every sequence-level metric of a decoded split: exact_match, bleu, chrf
  (with their sacrebleu signatures), and with g2p=True wer and per."""
  out = {"exact_match": exact_match(hypotheses, references)}
  out["bleu"], out["bleu_signature"] = corpus_bleu(hypotheses, references, bleu_tokenize)
  out["chrf"], out["chrf_signature"] = corpus_chrf(hypotheses, references)
  if g2p:
    out["wer"], out["per"] = g2p_error_rates(hypotheses, references)
  return out
