"""Sequence metrics and attention heat maps."""

import os

import numpy as np
import sacrebleu

from seq2seq_jax import metrics, plotting


def test_exact_match_and_bleu():
  hyps = ["2020-03-03", "1999-12-31", "2001-01-01"]
  refs = ["2020-03-03", "1999-12-30", "2001-01-01"]
  assert metrics.exact_match(hyps, refs) == 2 / 3
  score, sig = metrics.corpus_bleu(hyps, refs, metrics.bleu_tokenizer("char"))
  assert "tok:char" in sig
  assert 0 < score < 100
  perfect, _ = metrics.corpus_bleu(refs, refs, "char")
  assert abs(perfect - 100.0) < 1e-9
  # Same number as sacrebleu's own function (nothing lost in the wrapper).
  assert score == sacrebleu.corpus_bleu(hyps, [refs], tokenize="char").score
  assert metrics.bleu_tokenizer("word") == "13a"


def test_attention_png(tmp_path):
  weights = np.random.default_rng(0).dirichlet(np.ones(5), size=4)
  path = os.path.join(tmp_path, "a.png")
  plotting.save_attention_png(path, [
      {"weights": weights, "src_tokens": list("ab cd"), "tgt_tokens": list("wxyz"), "title": "t"},
      {"weights": weights[:2, :3], "src_tokens": list("abc"), "tgt_tokens": list("wx")},
  ])
  image = plotting.figure_to_array(path)
  assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
  assert image.std() > 0  # something was drawn


def test_heads_grid_png(tmp_path):
  weights = np.random.default_rng(1).dirichlet(np.ones(4), size=(3, 2))  # heads, tgt, src
  path = os.path.join(tmp_path, "heads.png")
  plotting.save_heads_png(path, weights, list("abcd"), ["x", "<eos>"], title="ex")
  image = plotting.figure_to_array(path)
  assert image.shape[1] > image.shape[0]  # three panels side by side
