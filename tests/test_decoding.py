"""Greedy decoding against a Python loop over `decode_step`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seq2seq_jax import decoding
from seq2seq_jax.data.tokenizers import BOS, EOS, PAD
from seq2seq_jax.errors import LengthError
from seq2seq_jax.models.rnn_seq2seq import RNNSeq2Seq
from seq2seq_jax.models.transformer import Transformer


def python_greedy(model, variables, src, src_len, max_len):
  memory = model.apply(variables, src, src_len, method=model.encode)
  state = model.apply(variables, memory, method=model.init_decode_state)
  token = jnp.full((src.shape[0],), BOS, jnp.int32)
  rows = [[] for _ in range(src.shape[0])]
  for _ in range(max_len):
    logits, state, _ = model.apply(variables, state, token, method=model.decode_step)
    token = jnp.argmax(logits, -1).astype(jnp.int32)
    for b, t in enumerate(np.asarray(token)):
      if not rows[b] or rows[b][-1] != EOS:
        rows[b].append(int(t))
  return rows


@pytest.mark.parametrize("decoder", ["bahdanau", "plain"])
def test_greedy_matches_python_loop(decoder):
  # EOS made likely so rows stop at different steps.
  model = RNNSeq2Seq(10, 6, embed_dim=4, encoder_hidden=6, encoder_layers=1, decoder=decoder,
                     decoder_hidden=6, attention_dim=4)
  rng = np.random.default_rng(0)
  src = rng.integers(4, 10, size=(5, 4)).astype(np.int32)
  src_len = np.array([4, 3, 2, 1, 4], np.int32)
  variables = model.init(jax.random.key(0), src, src_len, src)
  params = variables["params"]
  params["output"]["bias"] = params["output"]["bias"].at[EOS].add(0.2)
  variables = {"params": params}
  out = decoding.jit_greedy_decode(model, 7)(params, src, src_len)
  want = python_greedy(model, variables, src, src_len, 7)
  tokens, lengths = np.asarray(out["tokens"]), np.asarray(out["lengths"])
  assert len({len(r) for r in want}) > 1, "test wants rows of different lengths"
  for b, row in enumerate(want):
    assert lengths[b] == len(row)
    assert list(tokens[b, :len(row)]) == row
    assert np.all(tokens[b, len(row):] == PAD)
  if decoder == "bahdanau":
    w = np.asarray(out["attention"])
    for b in range(5):
      np.testing.assert_allclose(w[b, :lengths[b]].sum(-1), 1.0, rtol=1e-5)
      assert np.all(w[b, lengths[b]:] == 0.0) and np.all(w[b, :, src_len[b]:] == 0.0)
  else:
    assert out["attention"] is None


def test_filler_rows_finish_at_once():
  model = RNNSeq2Seq(10, 6, embed_dim=4, encoder_hidden=6, encoder_layers=1,
                     decoder_hidden=6, attention_dim=4)
  src = np.full((2, 3), 5, np.int32)
  src_len = np.array([0, 0], np.int32)
  params = model.init(jax.random.key(0), src, src_len, src)["params"]
  out = decoding.greedy_decode(model, params, src, src_len, 5)
  assert np.all(np.asarray(out["lengths"]) == 0) and np.all(np.asarray(out["tokens"]) == PAD)


@pytest.mark.parametrize("decoder", ["greedy", "beam", "sample", "jit beam"])
def test_decoding_past_transformer_positions_is_an_error(decoder):
  """max_len 7 on a Transformer with 6 positions: one LengthError, raised
  while tracing (a Python check on shapes), instead of positions clamped
  and cache writes dropped; max_len 6 uses every position."""
  model = Transformer(10, 8, num_layers=1, d_model=8, num_heads=2, d_ff=8, dropout=0.0,
                      max_len=6)
  src, src_len = np.full((2, 3), 5, np.int32), np.array([3, 2], np.int32)
  params = model.init(jax.random.key(0), src, src_len, src)["params"]
  params["output"]["bias"] = params["output"]["bias"].at[EOS].add(-100.0)  # never ends early
  decode = {
      "greedy": lambda n: decoding.greedy_decode(model, params, src, src_len, n),
      "beam": lambda n: decoding.beam_search(model, params, src, src_len, n, beam_size=2),
      "sample": lambda n: decoding.sample_decode(model, params, src, src_len, n,
                                                 jax.random.key(1)),
      "jit beam": lambda n: decoding.jit_decode(model, n, beam_size=2)(params, src, src_len),
  }[decoder]
  with pytest.raises(LengthError) as error:
    decode(7)
  assert str(error.value) == ("decoding up to max_len=7 tokens needs more than the Transformer's "
                              "6 positions (config.model.transformer.max_len)")
  out = decode(6)
  assert int(out["steps"]) == 6 and np.all(np.asarray(out["lengths"]) == 6)
