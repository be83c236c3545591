"""Beam search and sampling: against greedy, exhaustive search and teacher
forcing, on a table model whose scores can be enumerated and on real models."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seq2seq_jax import decoding
from seq2seq_jax.data.tokenizers import BOS, EOS
from seq2seq_jax.models.rnn_seq2seq import RNNSeq2Seq
from seq2seq_jax.models.transformer import Transformer

V, L = 6, 3  # vocabulary and max length of the table model


class TableModel(nn.Module):
  """logits = table[t, previous token]: every sequence's score is a sum of
  table entries, so the true best can be found by enumeration."""

  def setup(self):
    self.table = self.param("table", nn.initializers.normal(2.0), (L + 1, V, V))

  def encode(self, src, src_len):
    return {"src_len": src_len}

  def init_decode_state(self, memory):
    return {"t": jnp.zeros_like(memory["src_len"])}

  def decode_step(self, state, token):
    return self.table[state["t"], token], {"t": state["t"] + 1}, None

  def __call__(self, src, src_len, tgt_in):
    return self.table[jnp.arange(tgt_in.shape[1])[None], tgt_in], {"attention": None}


def table_params(seed):
  model = TableModel()
  x = jnp.zeros((1, 1), jnp.int32)
  return model, model.init(jax.random.key(seed), x, jnp.ones(1, jnp.int32), x)["params"]


def sequence_logprob(model, params, src, src_len, tokens):
  """Teacher-forced log-probability of `tokens` (a list ending in EOS)."""
  tgt_in = jnp.asarray([[BOS] + tokens[:-1]], jnp.int32)
  logits, _ = model.apply({"params": params}, src, src_len, tgt_in)
  logp = jax.nn.log_softmax(logits[0])
  return float(sum(logp[i, tok] for i, tok in enumerate(tokens)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wide_beam_finds_the_true_best_sequence(seed):
  model, params = table_params(seed)
  src, src_len = jnp.zeros((1, 1), jnp.int32), jnp.ones(1, jnp.int32)
  best, best_lp = None, -np.inf
  for n in range(1, L + 1):
    for prefix in itertools.product(range(V), repeat=n - 1):
      if EOS in prefix:
        continue
      lp = sequence_logprob(model, params, src, src_len, list(prefix) + [EOS])
      if lp > best_lp:
        best, best_lp = list(prefix) + [EOS], lp
  out = decoding.beam_search(model, params, src, src_len, L, beam_size=V ** (L - 1),
                             penalty="none")
  got = list(np.asarray(out["tokens"][0, 0, :out["lengths"][0, 0]]))
  assert out["scores"][0, 0] > -1e8  # a sequence that ended within L, not the fallback
  assert got == best
  np.testing.assert_allclose(out["scores"][0, 0], best_lp, rtol=1e-5)


def test_beam_one_equals_greedy():
  model, params = table_params(3)
  src, src_len = jnp.zeros((4, 1), jnp.int32), jnp.ones(4, jnp.int32)
  greedy = decoding.greedy_decode(model, params, src, src_len, L)
  beam1 = decoding.beam_search(model, params, src, src_len, L, beam_size=1, penalty="none")
  np.testing.assert_array_equal(beam1["tokens"][:, 0], greedy["tokens"])


def test_beam_beats_greedy_where_greedy_commits_too_early():
  """Greedy takes token 3 (p 0.52) over 4 (p 0.48), but after 3 every
  continuation is unlikely, while after 4 <eos> is near certain: greedy's
  [3, <eos>] has p 0.52 x 0.27, beam search finds [4, <eos>] at p 0.48."""
  model, params = table_params(0)
  table = jnp.full((L + 1, V, V), -10.0)
  table = table.at[0, BOS, 3].set(1.0).at[0, BOS, 4].set(0.9)
  table = table.at[1, 3, 3:].set(0.0).at[1, 3, EOS].set(0.1)
  table = table.at[1, 4, EOS].set(10.0)
  params = dict(params, table=table)
  src, src_len = jnp.zeros((2, 1), jnp.int32), jnp.ones(2, jnp.int32)
  greedy = decoding.greedy_decode(model, params, src, src_len, L)
  g = list(np.asarray(greedy["tokens"][0, :greedy["lengths"][0]]))
  assert g == [3, EOS]
  beam4 = decoding.beam_search(model, params, src, src_len, L, beam_size=4, penalty="none")
  best = list(np.asarray(beam4["tokens"][0, 0, :beam4["lengths"][0, 0]]))
  assert best == [4, EOS]
  best_lp = sequence_logprob(model, params, src[:1], src_len[:1], best)
  np.testing.assert_allclose(float(beam4["scores"][0, 0]), best_lp, rtol=1e-5)
  assert best_lp > sequence_logprob(model, params, src[:1], src_len[:1], g) + 0.5
  assert np.all(np.diff(np.asarray(beam4["scores"]), axis=1) <= 1e-6)  # n-best sorted


def test_length_penalties():
  lens = jnp.array([1, 4, 10])
  np.testing.assert_allclose(decoding.length_penalty("gnmt", lens, 0.6), ((5 + lens) / 6) ** 0.6)
  np.testing.assert_allclose(decoding.length_penalty("normalize", lens, 1.0), lens)
  np.testing.assert_allclose(decoding.length_penalty("none", lens, 1.0), 1.0)


def test_greedy_stops_when_every_row_has_ended():
  model, params = table_params(0)
  params = dict(params)
  table = jnp.full((L + 1, V, V), -5.0).at[:, :, 4].set(5.0).at[2, :, EOS].set(10.0)
  params["table"] = table  # token 4, 4, then <eos> at step 3, for every row
  src, src_len = jnp.zeros((3, 1), jnp.int32), jnp.ones(3, jnp.int32)
  out = decoding.greedy_decode(model, params, src, src_len, 50)
  assert int(out["steps"]) == 3 and np.all(np.asarray(out["lengths"]) == 3)


def test_sampling_reproducible_and_zero_temperature_is_greedy():
  model, params = table_params(4)
  src, src_len = jnp.zeros((16, 1), jnp.int32), jnp.ones(16, jnp.int32)
  greedy = decoding.greedy_decode(model, params, src, src_len, L)
  cold = decoding.sample_decode(model, params, src, src_len, L, jax.random.key(0), temperature=0.0)
  np.testing.assert_array_equal(cold["tokens"], greedy["tokens"])
  a = decoding.sample_decode(model, params, src, src_len, L, jax.random.key(7))
  b = decoding.sample_decode(model, params, src, src_len, L, jax.random.key(7))
  c = decoding.sample_decode(model, params, src, src_len, L, jax.random.key(8))
  np.testing.assert_array_equal(a["tokens"], b["tokens"])
  assert not np.array_equal(a["tokens"], c["tokens"])


def test_filter_logits_top_k_and_top_p():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  keep = lambda x: np.asarray(x[0] > -1e30)
  np.testing.assert_array_equal(keep(decoding.filter_logits(logits, top_k=2)), [1, 1, 0, 0])
  np.testing.assert_array_equal(keep(decoding.filter_logits(logits, top_p=0.7)), [1, 1, 0, 0])
  np.testing.assert_array_equal(keep(decoding.filter_logits(logits, top_p=0.5)), [1, 0, 0, 0])
  np.testing.assert_array_equal(keep(decoding.filter_logits(logits, top_p=0.9)), [1, 1, 1, 0])


@pytest.mark.parametrize("kind,eos_bias", [("rnn", 0.3), ("transformer", -0.5)])
def test_beam_scores_match_teacher_forcing(kind, eos_bias):
  """Each returned hypothesis' score equals its teacher-forced log-prob over
  the penalty, which fails if the decoder state (a Transformer's cache) is
  not reordered with the beams. The <eos> bias is chosen so that every
  hypothesis ends within max_len, some after several steps."""
  if kind == "rnn":
    model = RNNSeq2Seq(10, 8, embed_dim=4, encoder_hidden=6, encoder_layers=1,
                       decoder_hidden=6, attention_dim=4)
  else:
    model = Transformer(10, 8, num_layers=1, d_model=8, num_heads=2, d_ff=8, dropout=0.0,
                        max_len=8)
  rng = np.random.default_rng(0)
  src = rng.integers(4, 10, size=(2, 5)).astype(np.int32)
  src_len = np.array([5, 3], np.int32)
  params = model.init(jax.random.key(1), src, src_len, src)["params"]
  params["output"]["bias"] = params["output"]["bias"].at[EOS].add(eos_bias)
  out = decoding.beam_search(model, params, src, src_len, 6, beam_size=3, alpha=0.6)
  lengths = np.asarray(out["lengths"])
  assert lengths.min() >= 1 and lengths.max() >= 3
  for b in range(2):
    for j in range(3):
      toks = list(np.asarray(out["tokens"][b, j, :lengths[b, j]]))
      assert toks[-1] == EOS and EOS not in toks[:-1]
      lp = sequence_logprob(model, params, src[b:b + 1], src_len[b:b + 1], toks)
      pen = float(decoding.length_penalty("gnmt", jnp.asarray(lengths[b, j]), 0.6))
      np.testing.assert_allclose(float(out["scores"][b, j]) * pen, lp, rtol=1e-4, atol=1e-4)
