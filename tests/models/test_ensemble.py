"""The Ensemble model: several models decoded as one over the contract."""

import jax
import numpy as np
import pytest

from seq2seq_jax import decoding
from seq2seq_jax.data.tokenizers import EOS
from seq2seq_jax.errors import LengthError
from seq2seq_jax.models import Ensemble
from seq2seq_jax.models.rnn_seq2seq import RNNSeq2Seq
from seq2seq_jax.models.transformer import Transformer
from tests.models.contract import decode_step_by_step
from tests.test_decoding import python_greedy

SRC_V, TGT_V = 11, 9


def np_log_softmax(x):
  x = np.asarray(x, np.float64)
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def members():
  gru = RNNSeq2Seq(SRC_V, TGT_V, embed_dim=4, encoder_hidden=6, encoder_layers=1,
                   decoder_hidden=6, attention_dim=4)
  transformer = Transformer(SRC_V, TGT_V, num_layers=1, d_model=8, num_heads=2, d_ff=8,
                            dropout=0.0, max_len=12)
  return gru, transformer


def batch():
  rng = np.random.default_rng(0)
  src = rng.integers(4, SRC_V, size=(3, 5)).astype(np.int32)
  src_len = np.array([5, 3, 1], np.int32)
  tgt_in = rng.integers(4, TGT_V, size=(3, 6)).astype(np.int32)
  return src, src_len, tgt_in


def member_params(models, src, src_len, tgt_in):
  return [m.init(jax.random.key(i), src, src_len, tgt_in)["params"]
          for i, m in enumerate(models)]


def test_an_ensemble_scores_the_mean_of_its_members_log_probabilities():
  """A GRU with attention and a Transformer: teacher forcing and step-by-step
  decoding both give (1/K) sum_k log_softmax(logits_k), computed here in
  NumPy from each member run alone."""
  src, src_len, tgt_in = batch()
  gru, transformer = members()
  params = member_params((gru, transformer), src, src_len, tgt_in)
  alone = [np.asarray(m.apply({"params": p}, src, src_len, tgt_in)[0])
           for m, p in zip((gru, transformer), params)]
  want = (np_log_softmax(alone[0]) + np_log_softmax(alone[1])) / 2

  ensemble = Ensemble((gru, transformer))
  variables = {"params": {"members_0": params[0], "members_1": params[1]}}
  logits, aux = ensemble.apply(variables, src, src_len, tgt_in)
  np.testing.assert_allclose(np.asarray(logits), want, atol=2e-5)
  stepped, attention = decode_step_by_step(ensemble, variables, src, src_len, tgt_in)
  np.testing.assert_allclose(stepped, want, atol=2e-5)
  # The members' attention differs in shape (heads): the first member's is kept.
  gru_attention = gru.apply({"params": params[0]}, src, src_len, tgt_in)[1]["attention"]
  np.testing.assert_allclose(np.asarray(aux["attention"]), np.asarray(gru_attention), atol=1e-6)
  assert attention[0].shape == (3, 5)


def test_an_ensemble_initializes_its_members_independently():
  src, src_len, tgt_in = batch()
  gru = members()[0]
  params = Ensemble((gru, gru)).init(jax.random.key(0), src, src_len, tgt_in)["params"]
  assert set(params) == {"members_0", "members_1"}
  a, b = (np.asarray(params[f"members_{i}"]["output"]["kernel"]) for i in range(2))
  assert a.shape == b.shape and not np.allclose(a, b)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_a_model_ensembled_with_itself_decodes_like_the_model(beam_size):
  """mean(log_softmax(z), log_softmax(z)) = log_softmax(z): the same tokens,
  lengths and scores as the model alone, greedy and beam."""
  src, src_len, tgt_in = batch()
  gru = members()[0]
  params = member_params((gru,), src, src_len, tgt_in)[0]
  params["output"]["bias"] = params["output"]["bias"].at[EOS].add(0.3)  # rows end at different steps
  ensemble = Ensemble((gru, gru))
  both = {"members_0": params, "members_1": params}
  alone = decoding.jit_decode(gru, 8, beam_size=beam_size)(params, src, src_len)
  together = decoding.jit_decode(ensemble, 8, beam_size=beam_size)(both, src, src_len)
  np.testing.assert_array_equal(np.asarray(together["tokens"]), np.asarray(alone["tokens"]))
  np.testing.assert_array_equal(np.asarray(together["lengths"]), np.asarray(alone["lengths"]))
  assert len(set(np.asarray(alone["lengths"]).ravel().tolist())) > 1
  if beam_size > 1:
    np.testing.assert_allclose(np.asarray(together["scores"]), np.asarray(alone["scores"]),
                               rtol=1e-5)


def test_greedy_decoding_of_an_ensemble_takes_the_argmax_of_the_mean():
  src, src_len, tgt_in = batch()
  gru, transformer = members()
  params = member_params((gru, transformer), src, src_len, tgt_in)
  ensemble = Ensemble((gru, transformer))
  both = {"members_0": params[0], "members_1": params[1]}
  out = decoding.greedy_decode(ensemble, both, src, src_len, 6)
  want = python_greedy(ensemble, {"params": both}, src, src_len, 6)
  tokens, lengths = np.asarray(out["tokens"]), np.asarray(out["lengths"])
  for b, row in enumerate(want):
    assert lengths[b] == len(row) and list(tokens[b, :len(row)]) == row
  # Not simply one member's choice: each alone decodes differently here.
  alone = [python_greedy(m, {"params": p}, src, src_len, 6)
           for m, p in zip((gru, transformer), params)]
  assert alone[0] != alone[1]


def test_an_ensemble_keeps_its_members_position_limits():
  src, src_len, tgt_in = batch()
  gru, transformer = members()  # the Transformer has 12 positions
  params = member_params((gru, transformer), src, src_len, tgt_in)
  ensemble = Ensemble((gru, transformer))
  both = {"members_0": params[0], "members_1": params[1]}
  with pytest.raises(LengthError, match="12 positions"):
    decoding.jit_decode(ensemble, 13, beam_size=2)(both, src, src_len)
