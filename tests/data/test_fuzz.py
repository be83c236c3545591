"""Property tests: any bytes into the readers, any text into the tokenizers,
give a clean result or a clear DataError; never another exception or a hang.
"""

import gzip
import json
import os
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from seq2seq_jax.data import tokenizers, tsv, tsv_index
from seq2seq_jax.data.tokenizers import UNK
from seq2seq_jax.errors import DataError

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

# Bytes rich in the separators the reader cares about.
LINES = st.lists(st.one_of(st.binary(max_size=40),
                           st.sampled_from([b"\t", b"\n", b"\r\n", b" ", b"\xef\xbb\xbf", b"\xff",
                                            b"a\tb", b"a\tb\tc", b"\t\n"])), max_size=30)


def _read(data: bytes, suffix: str):
  with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "data" + suffix)
    with open(path, "wb") as f:
      f.write(data)
    try:
      pairs, stats = tsv.read_tsv(path)
    except DataError as e:
      assert str(e) and "\n" not in str(e)
      if suffix == ".tsv":  # the index reads the same lines: the same error
        with pytest.raises(DataError) as info:
          tsv_index.carve(path, 0, {})
        assert str(info.value) == str(e)
      return None
    streamed = list(tsv.stream_tsv(path))
    assert streamed == pairs
    if suffix == ".tsv":
      train = tsv_index.carve(path, 0, {}).splits["train"]
      assert list(train) == list(dict.fromkeys(pairs))  # duplicates dropped
      assert [train[i] for i in range(len(train))] == list(train)
      train.close()
      again = tsv_index.carve(path, 0, {}).splits["train"]  # from the cache, if any
      assert list(again) == list(train)
      again.close()
    return pairs, stats


def _check_pairs(result):
  if result is None:
    return
  pairs, stats = result
  assert stats["pairs"] == len(pairs)
  for src, tgt in pairs:
    assert src and tgt and src == src.strip() and tgt == tgt.strip()
    assert "\t" not in src + tgt and "\n" not in src + tgt


@FUZZ
@given(LINES)
def test_read_tsv_any_bytes(chunks):
  _check_pairs(_read(b"".join(chunks), ".tsv"))


@FUZZ
@given(LINES, st.booleans())
def test_read_tsv_gz_any_bytes_or_any_archive(chunks, compress):
  data = b"".join(chunks)
  _check_pairs(_read(gzip.compress(data) if compress else data, ".tsv.gz"))


TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=30)


@FUZZ
@given(st.sampled_from(["char", "word"]), st.lists(TEXT, min_size=1, max_size=10), TEXT)
def test_tokenizers_any_text(kind, corpus, text):
  tok = tokenizers.make_tokenizer(kind, corpus)
  ids = tok.encode(text)
  assert all(0 <= i < len(tok.vocab) for i in ids)
  assert tok.count_unknown(text) == sum(i == UNK for i in ids[:len(tok.split(text))])
  tok.decode(ids)  # any ids it made decode


@FUZZ
@given(st.lists(TEXT, min_size=1, max_size=10), st.data())
def test_char_tokenizer_round_trips_the_texts_it_was_built_from(corpus, data):
  """Every character of a text in the corpus is in the vocabulary, so the
  text comes back whole."""
  text = data.draw(st.sampled_from(corpus))
  tok = tokenizers.make_tokenizer("char", corpus)
  ids = tok.encode(text)
  assert UNK not in ids and tok.count_unknown(text) == 0
  assert tok.decode(ids) == tok.join(tok.split(text))


@FUZZ
@given(st.binary(max_size=200))
def test_load_tokenizer_any_bytes(data):
  with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "tok.json")
    with open(path, "wb") as f:
      f.write(data)
    try:
      tokenizers.load_tokenizer(path)
    except DataError:
      pass


@FUZZ
@given(st.dictionaries(st.sampled_from(["kind", "tokens", "model"]),
                       st.one_of(st.sampled_from(["char", "word", "sentencepiece"]),
                                 st.lists(st.one_of(TEXT, st.integers()), max_size=6),
                                 st.integers(), TEXT)))
def test_load_tokenizer_any_json(payload):
  with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "tok.json")
    with open(path, "w", encoding="utf-8") as f:
      json.dump(payload, f)
    try:
      tokenizers.load_tokenizer(path)
    except DataError:
      pass


_SPM = []


def _spm():
  if not _SPM:
    from seq2seq_jax.data import subword
    corpus = [f"the {w} sat on the mat number {i}" for i, w in
              enumerate(["cat", "dog", "bird", "fox", "émile", "日本"] * 20)]
    _SPM.append(subword.train_sentencepiece(corpus, {"vocab_size": 300}))
  return _SPM[0]


@FUZZ
@given(TEXT)
def test_sentencepiece_any_text(text):
  tok = _spm()
  ids = tok.encode(text)
  assert all(0 <= i < len(tok.vocab) for i in ids)
  assert isinstance(tok.decode(ids), str)
