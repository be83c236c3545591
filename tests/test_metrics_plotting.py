"""Sequence metrics and attention heat maps."""

import os
import subprocess
import sys

import numpy as np
import pytest
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


def test_edit_distance_hand_worked():
  assert metrics.edit_distance("kitten", "sitting") == 3  # 2 substitutions, 1 insertion
  assert metrics.edit_distance([], ["A", "B"]) == 2
  assert metrics.edit_distance(["A", "B"], []) == 2
  assert metrics.edit_distance("flaw", "lawn") == 2
  assert metrics.edit_distance(["K", "AE", "T"], ["K", "AE", "T"]) == 0


def test_g2p_error_rates_hand_worked():
  hyps = ["T AH M EY T OW",  # matches the second reference: right
          "R EH D",          # matches one of two readings of "read": right
          "K AE T S",        # one insertion against "K AE T"
          "D AA G"]          # one substitution against "D AO G" (3) / "D AA G Z"...
  refs = [["T AH M AA T OW", "T AH M EY T OW"],
          ["R IY D", "R EH D"],
          ["K AE T"],
          ["D AO G", "D AA G Z"]]
  wer, per = metrics.g2p_error_rates(hyps, refs)
  assert wer == 0.5  # words 3 and 4 are wrong
  # Closest references: 0 edits/6, 0/3, 1/3, and for "D AA G" a tie of one
  # edit between "D AO G" (3 phonemes) and "D AA G Z" (4): the shorter counts.
  assert per == pytest.approx((0 + 0 + 1 + 1) / (6 + 3 + 3 + 3))
  assert metrics.exact_match(hyps, refs) == 0.5
  with pytest.raises(ValueError):
    metrics.g2p_error_rates(["A"], [[]])


def test_multi_reference_bleu_matches_sacrebleu():
  hyps = ["the cat sat on the mat", "a dog barked at the mailman today"]
  refs = [["the cat sat on the mat", "a cat sat on the mat"],
          ["the dog barked at the postman today"]]
  score, sig = metrics.corpus_bleu(hyps, refs)
  streams = [[refs[0][0], refs[1][0]], [refs[0][1], None]]
  assert score == sacrebleu.corpus_bleu(hyps, streams).score
  assert "nrefs:var" in sig
  out = metrics.sequence_metrics(hyps, refs, "13a", g2p=True)
  assert out["exact_match"] == 0.5 and 0 < out["chrf"] < 100 and out["wer"] == 0.5


def test_bleu_agrees_with_sacrebleu_command_line(tmp_path):
  hyps = ["The quick brown fox jumps over the lazy dog.", "It is raining, isn't it?",
          "She sells sea shells by the sea shore.", "Nothing to see here"]
  refs = ["The quick brown fox jumped over the lazy dog.", "It's raining, isn't it?",
          "She sells seashells by the seashore.", "Nothing to see here."]
  (tmp_path / "hyp.txt").write_text("\n".join(hyps) + "\n")
  (tmp_path / "ref.txt").write_text("\n".join(refs) + "\n")
  def cli(metric):
    out = subprocess.run([sys.executable, "-m", "sacrebleu", str(tmp_path / "ref.txt"), "-i",
                          str(tmp_path / "hyp.txt"), "-m", metric, "-b", "-w", "4"],
                         capture_output=True, text=True, check=True)
    return float(out.stdout)

  cli_bleu, cli_chrf = cli("bleu"), cli("chrf")
  assert 0 < cli_bleu < 100
  assert metrics.corpus_bleu(hyps, refs)[0] == pytest.approx(cli_bleu, abs=1e-4)
  assert metrics.corpus_chrf(hyps, refs)[0] == pytest.approx(cli_chrf, abs=1e-4)


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
