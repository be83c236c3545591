"""The model contract for recurrent seq2seq models."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seq2seq_jax.models.rnn_seq2seq import RNNSeq2Seq
from tests.models.contract import decode_step_by_step

SRC_V, TGT_V = 13, 11


def make(decoder, cell, bidirectional=True, decoder_layers=2, **kwargs):
  # encoder output 2 x 5 = decoder hidden 10, so dot scores fit too
  return RNNSeq2Seq(SRC_V, TGT_V, embed_dim=6, encoder_cell=cell, encoder_hidden=5,
                    encoder_layers=2, bidirectional=bidirectional, decoder=decoder,
                    decoder_cell=cell, decoder_hidden=10, decoder_layers=decoder_layers,
                    attention_dim=4, dropout=0.2, **kwargs)


def batch(rng, src_time=6, tgt_time=5):
  src = rng.integers(4, SRC_V, size=(3, src_time)).astype(np.int32)
  src_len = np.array([src_time, 3, 1], np.int32)
  tgt = rng.integers(4, TGT_V, size=(3, tgt_time)).astype(np.int32)
  return src, src_len, tgt


CASES = [("bahdanau", "gru", {}), ("bahdanau", "lstm", {}), ("bahdanau", "rnn", {}),
         ("plain", "gru", {}), ("plain", "lstm", {}),
         ("luong", "lstm", dict(attention_score="general", input_feeding=True)),
         ("luong", "gru", dict(attention_score="dot", input_feeding=False)),
         ("luong", "rnn", dict(attention_score="concat", attention_normalizer="sparsemax")),
         ("bahdanau", "gru", dict(attention_score="scaled_dot", attention_normalizer="topk",
                                  attention_topk=2))]


@pytest.mark.parametrize("decoder,cell,kwargs", CASES)
def test_teacher_forcing_equals_step_by_step(decoder, cell, kwargs):
  model = make(decoder, cell, **kwargs)
  src, src_len, tgt = batch(np.random.default_rng(0))
  variables = model.init(jax.random.key(0), src, src_len, tgt)
  logits, aux = model.apply(variables, src, src_len, tgt)
  step_logits, step_attn = decode_step_by_step(model, variables, src, src_len, tgt)
  np.testing.assert_allclose(step_logits, logits, rtol=1e-5, atol=1e-5)
  if decoder == "plain":
    assert aux["attention"] is None and step_attn[0] is None
  else:
    np.testing.assert_allclose(np.stack(step_attn, 1), aux["attention"], rtol=1e-5, atol=1e-6)


PADDING_CASES = [("bahdanau", "gru", {}), ("luong", "gru", dict(attention_score="general")),
                 ("luong", "lstm", dict(input_feeding=False, attention_normalizer="sparsemax"))]


def padded_source(rng, src, src_len):
  """src with 4 more columns and every padded position a random token."""
  src2 = np.concatenate([src, rng.integers(0, SRC_V, size=(3, 4))], axis=1).astype(np.int32)
  for b in range(3):
    src2[b, src_len[b]:] = rng.integers(0, SRC_V, size=src2.shape[1] - src_len[b])
  return src2


@pytest.mark.parametrize("decoder,cell,kwargs", PADDING_CASES + [("plain", "lstm", {})])
def test_padding_invariance_of_logits(decoder, cell, kwargs):
  model = make(decoder, cell, **kwargs)
  rng = np.random.default_rng(1)
  src, src_len, tgt = batch(rng)
  variables = model.init(jax.random.key(0), src, src_len, tgt)
  logits, aux = model.apply(variables, src, src_len, tgt)
  assert (aux["attention"] is None) == (decoder == "plain")
  # More source padding filled with random tokens, more target padding.
  src2 = padded_source(rng, src, src_len)
  tgt2 = np.concatenate([tgt, rng.integers(0, TGT_V, size=(3, 3))], axis=1).astype(np.int32)
  logits2, _ = model.apply(variables, src2, src_len, tgt2)
  np.testing.assert_allclose(logits2[:, :tgt.shape[1]], logits, rtol=1e-5, atol=1e-5)
  # And alone in a batch of one (no neighbours to pad for).
  one, _ = model.apply(variables, src[2:, :1], src_len[2:], tgt[2:])
  np.testing.assert_allclose(one[0], logits[2], rtol=1e-5, atol=1e-5)


def _with_and_without_lengths(decoder, cell, kwargs):
  """A model run with tgt_len = [7, 4, 0] (the last row a filler row) and
  without: (with, without, steps within each row's length, the readout's
  bias, and the run with other tokens after row 1's length)."""
  model = make(decoder, cell, **kwargs)
  rng = np.random.default_rng(4)
  src, src_len, tgt = batch(rng, tgt_time=7)
  tgt_len = np.array([7, 4, 0], np.int32)
  params = model.init(jax.random.key(0), src, src_len, tgt)["params"]
  bias = jnp.asarray(rng.normal(size=TGT_V), jnp.float32)  # not the initial zeros
  variables = {"params": {**params, "output": {**params["output"], "bias": bias}}}
  tgt2 = tgt.copy()
  tgt2[1, 4:] = 0
  return (model.apply(variables, src, src_len, tgt, tgt_len=tgt_len),
          model.apply(variables, src, src_len, tgt),  # every step (checked step by step above)
          np.arange(7) < tgt_len[:, None], np.asarray(bias),
          model.apply(variables, src, src_len, tgt2, tgt_len=tgt_len))


@pytest.mark.parametrize("decoder,cell,kwargs", PADDING_CASES + [("plain", "gru", {})])
def test_target_lengths_end_each_rows_steps(decoder, cell, kwargs):
  (logits, _), (full, _), valid, bias, (other, _) = _with_and_without_lengths(decoder, cell, kwargs)
  # Within a row's length: what the model gives without lengths.
  np.testing.assert_allclose(np.asarray(logits)[valid], np.asarray(full)[valid],
                             rtol=1e-5, atol=1e-5)
  # After it: zero features, so the logits are the readout's bias alone,
  # whatever the tokens there.
  padded = np.asarray(logits)[~valid]
  np.testing.assert_allclose(padded, np.broadcast_to(bias, padded.shape), rtol=1e-6)
  np.testing.assert_array_equal(other, logits)


@pytest.mark.parametrize("decoder,cell,kwargs", PADDING_CASES)
def test_target_lengths_end_each_rows_attention(decoder, cell, kwargs):
  (_, aux), (_, full_aux), valid, _, _ = _with_and_without_lengths(decoder, cell, kwargs)
  np.testing.assert_allclose(np.asarray(aux["attention"])[valid],
                             np.asarray(full_aux["attention"])[valid], rtol=1e-5, atol=1e-6)
  assert np.all(np.asarray(aux["attention"])[~valid] == 0.0)


@pytest.mark.parametrize("decoder,cell,kwargs", PADDING_CASES)
def test_attention_gives_source_padding_no_weight(decoder, cell, kwargs):
  model = make(decoder, cell, **kwargs)
  rng = np.random.default_rng(1)
  src, src_len, tgt = batch(rng)
  src2 = padded_source(rng, src, src_len)
  variables = model.init(jax.random.key(0), src2, src_len, tgt)
  _, aux = model.apply(variables, src2, src_len, tgt)
  w = np.asarray(aux["attention"])
  keep = np.arange(src2.shape[1])[None, None] < src_len[:, None, None]
  assert np.all(w[~np.broadcast_to(keep, w.shape)] == 0.0)
  np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)


def test_input_feeding_changes_the_model():
  rng = np.random.default_rng(4)
  src, src_len, tgt = batch(rng)
  fed, unfed = make("luong", "gru", input_feeding=True), make("luong", "gru", input_feeding=False)
  v_fed = fed.init(jax.random.key(0), src, src_len, tgt)
  v_unfed = unfed.init(jax.random.key(0), src, src_len, tgt)
  # Layer 0 reads [embedding; previous attentional state] only with feeding.
  assert v_fed["params"]["decoder_layer0"]["w_i"].shape[0] == 6 + 10
  assert v_unfed["params"]["decoder_layer0"]["w_i"].shape[0] == 6
  # With feeding, step t depends on step t-1's attention: changing the source
  # changes later logits through both paths; still finite and distributions.
  logits, aux = fed.apply(v_fed, src, src_len, tgt)
  assert np.isfinite(np.asarray(logits)).all()
  np.testing.assert_allclose(np.asarray(aux["attention"]).sum(-1), 1.0, rtol=1e-5)


def test_dropout_changes_training_output_only():
  model = make("bahdanau", "gru")
  src, src_len, tgt = batch(np.random.default_rng(2))
  variables = model.init(jax.random.key(0), src, src_len, tgt)
  a, _ = model.apply(variables, src, src_len, tgt, train=True, rngs={"dropout": jax.random.key(1)})
  b, _ = model.apply(variables, src, src_len, tgt, train=True, rngs={"dropout": jax.random.key(2)})
  c, _ = model.apply(variables, src, src_len, tgt)
  d, _ = model.apply(variables, src, src_len, tgt)
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(c, d)
  assert np.isfinite(np.asarray(a)).all()


def test_zero_length_filler_rows_are_finite():
  model = make("bahdanau", "lstm")
  src, src_len, tgt = batch(np.random.default_rng(3))
  src_len = np.array([6, 0, 0], np.int32)
  variables = model.init(jax.random.key(0), src, src_len, tgt)
  logits, aux = model.apply(variables, src, src_len, tgt)
  assert np.isfinite(np.asarray(logits)).all()
  assert np.all(np.asarray(aux["attention"])[1:] == 0.0)
