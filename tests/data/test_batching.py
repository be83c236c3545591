"""Tests for seq2seq_jax.data.batching: bucket boundaries and encoding.
The batches themselves (`pipeline.Batches`) are tested in test_pipeline.py."""

import numpy as np
import pytest

from seq2seq_jax.data import batching
from seq2seq_jax.data.tokenizers import CharTokenizer
from seq2seq_jax.errors import ConfigError


def test_parse_boundaries():
  assert batching.parse_boundaries("8,16,32") == (8, 16, 32)
  assert batching.parse_boundaries(" 8, 16 ") == (8, 16)
  assert batching.parse_boundaries([4, np.int64(9)]) == (4, 9)
  for bad in ["", "8,,16", "16,8", "8,8", "0,4", "-4,8", "8.5", [], [3, 2],
              [1.0, 2.0], [True, 2], None, 8]:
    with pytest.raises(ConfigError) as info:
      batching.parse_boundaries(bad, "data.src_boundaries")
    assert "data.src_boundaries" in str(info.value)
    assert repr(bad) in str(info.value)


def test_bucket_for():
  assert batching.bucket_for(1, (4, 8)) == 4
  assert batching.bucket_for(4, (4, 8)) == 4
  assert batching.bucket_for(5, (4, 8)) == 8
  assert batching.bucket_for(9, (4, 8)) == -1


def test_encode_pairs():
  tok = CharTokenizer.build(["abc"])
  src, tgt = batching.encode_pairs([("ab", "c"), ("cab", "")], tok, tok)
  assert [s.tolist() for s in src] == [tok.encode("ab"), tok.encode("cab")]
  assert [t.tolist() for t in tgt] == [tok.encode("c"), []]
  assert all(a.dtype == np.int32 for a in src + tgt)
  # pair_encoder: the same ids as lists, one pair at a time (Batches' `encode`).
  encode = batching.pair_encoder(tok, tok)
  for pair, s, t in zip([("ab", "c"), ("cab", "")], src, tgt):
    assert encode(pair) == (s.tolist(), t.tolist())
