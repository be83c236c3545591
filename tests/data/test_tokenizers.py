"""Tests for seq2seq_jax.data.tokenizers."""

import json

import pytest

from seq2seq_jax.data import tokenizers
from seq2seq_jax.data.tokenizers import (BOS, EOS, PAD, SPECIALS, UNK,
                                         CharTokenizer, Vocab, WordTokenizer,
                                         load_tokenizer, make_tokenizer)
from seq2seq_jax.errors import ConfigError, DataError


def test_specials_occupy_ids_zero_to_three():
  vocab = Vocab(["b", "a"])
  assert (PAD, BOS, EOS, UNK) == (0, 1, 2, 3)
  assert vocab.tokens[:4] == SPECIALS
  assert [vocab.id_to_token(i) for i in range(4)] == list(SPECIALS)
  assert vocab.token_to_id("b") == 4
  assert vocab.token_to_id("a") == 5
  assert len(vocab) == 6


def test_unknown_and_special_strings_map_to_unk():
  vocab = Vocab(["a"])
  assert vocab.token_to_id("zzz") == UNK
  # Text must not be able to inject control ids.
  assert vocab.encode(["<eos>", "<pad>", "a"]) == [UNK, UNK, 4]


def test_duplicate_tokens_rejected():
  with pytest.raises(ValueError, match="duplicate"):
    Vocab(["a", "b", "a"])


def test_build_orders_by_frequency_then_token():
  vocab = Vocab.build([["d", "b", "c", "a"], ["c", "b"], ["c"]])
  assert vocab.tokens[4:] == ("c", "b", "a", "d")


def test_build_min_freq_and_max_size():
  lists = [["x", "x", "x", "y", "y", "z"]]
  assert Vocab.build(lists, min_freq=2).tokens[4:] == ("x", "y")
  assert Vocab.build(lists, max_size=1).tokens[4:] == ("x",)
  assert len(Vocab.build(lists, max_size=2)) == 6
  with pytest.raises(ConfigError, match="min_freq"):
    Vocab.build(lists, min_freq=0)
  with pytest.raises(ConfigError, match="max_size"):
    Vocab.build(lists, max_size=0)


@pytest.mark.parametrize(
    "text", ["hello world", "", " a  b ", "ünïcödé ✓\t"])
def test_char_round_trip(text):
  tok = CharTokenizer.build([text, "abc"])
  assert tok.decode(tok.encode(text)) == text
  assert tok.count_unknown(text) == 0


def test_word_round_trip_normalises_whitespace():
  tok = WordTokenizer.build(["the cat sat", "on the mat"])
  assert tok.decode(tok.encode("the  cat sat\ton the mat ")) == (
      "the cat sat on the mat")


def test_encode_adds_no_specials():
  tok = CharTokenizer.build(["ab"])
  ids = tok.encode("ab")
  assert len(ids) == 2 and not set(ids) & {PAD, BOS, EOS, UNK}


def test_decode_stops_at_eos_and_skips_pad_bos():
  tok = WordTokenizer.build(["a b c"])
  a, b, c = tok.encode("a b c")
  assert tok.decode([BOS, a, PAD, b, EOS, c, c]) == "a b"
  assert tok.decode([EOS, a]) == ""


def test_unknown_tokens_render_and_count():
  tok = WordTokenizer.build(["a b"])
  assert tok.encode("a q b r") == [tok.vocab.token_to_id("a"), UNK,
                                   tok.vocab.token_to_id("b"), UNK]
  assert tok.count_unknown("a q b r") == 2
  assert tok.decode(tok.encode("a q")) == "a <unk>"


@pytest.mark.parametrize("kind", ["char", "word"])
def test_save_load_round_trip(tmp_path, kind):
  texts = ["the quick brown fox", "jumps over the lazy dog"]
  tok = make_tokenizer(kind, texts, min_freq=1)
  path = tmp_path / "tok.json"
  tok.save(str(path))
  saved = json.loads(path.read_text(encoding="utf-8"))
  assert saved["kind"] == kind
  assert saved["tokens"] == list(tok.vocab.tokens[4:])
  loaded = load_tokenizer(str(path))
  assert type(loaded) is type(tok)
  assert loaded.vocab.tokens == tok.vocab.tokens
  for text in texts:
    assert loaded.encode(text) == tok.encode(text)


def test_make_tokenizer_unknown_kind():
  with pytest.raises(ConfigError, match="char, word") as info:
    make_tokenizer("bpe", ["x"])
  assert "'bpe'" in str(info.value)


def test_load_missing_file(tmp_path):
  path = tmp_path / "nope.json"
  with pytest.raises(DataError, match="not found") as info:
    load_tokenizer(str(path))
  assert str(path) in str(info.value)


@pytest.mark.parametrize("content", [
    "{not json",
    "[1, 2]",
    '{"kind": "bpe", "tokens": []}',
    '{"kind": "char"}',
    '{"kind": "char", "tokens": ["a", "a"]}',
    '{"kind": "word", "tokens": ["<unk>"]}',
])
def test_load_malformed_file(tmp_path, content):
  path = tmp_path / "bad.json"
  path.write_text(content, encoding="utf-8")
  with pytest.raises(DataError) as info:
    load_tokenizer(str(path))
  assert str(path) in str(info.value)
  assert "\n" not in str(info.value)


def test_tokenizer_kinds_constant_matches_classes():
  assert CharTokenizer.kind == "char" and WordTokenizer.kind == "word"
  assert set(tokenizers.TOKENIZER_KINDS) == {"char", "word", "sentencepiece"}
