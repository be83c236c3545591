"""Sequence-level metrics on detokenized text: exact match and BLEU/chrF via
sacrebleu (its signature is returned so a reported score can be reproduced).

Token-level metrics (loss, perplexity, token accuracy) live in training.py,
since they are computed from logits inside the jitted steps.
"""

from typing import Sequence

import sacrebleu


def exact_match(hypotheses: Sequence[str], references: Sequence[str]) -> float:
  """Fraction of hypotheses identical to their reference (0.0 for none)."""
  if len(hypotheses) != len(references):
    raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
  if not references:
    return 0.0
  return sum(h == r for h, r in zip(hypotheses, references)) / len(references)


def bleu_tokenizer(kind: str) -> str:
  """sacrebleu's tokenizer for a target tokenizer kind: character-level
  targets (dates, reversed strings) are scored over characters, words with
  the standard 13a tokenization."""
  return "char" if kind == "char" else "13a"


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str],
                tokenize: str = "13a") -> tuple[float, str]:
  """Corpus BLEU (0-100) and sacrebleu's signature string."""
  bleu = sacrebleu.metrics.BLEU(tokenize=tokenize)
  score = bleu.corpus_score(list(hypotheses), [list(references)])
  return float(score.score), str(bleu.get_signature())


def corpus_chrf(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[float, str]:
  """Corpus chrF (0-100) and sacrebleu's signature string."""
  chrf = sacrebleu.metrics.CHRF()
  score = chrf.corpus_score(list(hypotheses), [list(references)])
  return float(score.score), str(chrf.get_signature())
