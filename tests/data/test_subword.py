"""Tests for seq2seq_jax.data.subword (SentencePiece tokenizers)."""

import itertools
import json

import pytest

from seq2seq_jax.data import subword, tokenizers
from seq2seq_jax.data.tokenizers import (BOS, EOS, PAD, SPECIALS, UNK,
                                         load_tokenizer, make_tokenizer)
from seq2seq_jax.errors import ConfigError, DataError

SOURCES = [
    "The quick brown fox jumps over the lazy dog.",
    "She said: \"don't worry\" -- it's fine; really?!",
    "Numbers like 1,234.56 and (parentheses) [brackets] {braces}.",
    "A café in São Paulo serves açaí, pão de queijo and coffee.",
    "We were walking along the river when it started to rain.",
    "Could you please tell me where the train station is?",
    "Programming languages: Python, Rust, C++ & Haskell.",
    "The weather today is sunny with a chance of showers later.",
    "Über den Wolken muss die Freiheit wohl grenzenlos sein.",
    "Ça va très bien, merci beaucoup pour votre aide.",
    "Scientists discovered a new species of frog in the rainforest.",
    "Her brother's friends arrived late, tired but happy.",
]
TARGETS = [
    "A rápida raposa marrom pula sobre o cão preguiçoso.",
    "Ela disse: \"não se preocupe\" -- está tudo bem; sério?!",
    "Números como 1.234,56 e (parênteses) [colchetes] {chaves}.",
    "Um café em São Paulo serve açaí, pão de queijo e café.",
    "Estávamos caminhando ao longo do rio quando começou a chover.",
    "Você poderia me dizer onde fica a estação de trem?",
    "Linguagens de programação: Python, Rust, C++ e Haskell.",
    "O tempo hoje está ensolarado com chance de chuvas mais tarde.",
    "Acima das nuvens a liberdade deve ser ilimitada.",
    "Está tudo muito bem, muito obrigado pela sua ajuda.",
    "Cientistas descobriram uma nova espécie de sapo na floresta.",
    "Os amigos do irmão dela chegaram tarde, cansados mas felizes.",
]
CORPUS = SOURCES * 3

SAMPLES = [
    "The quick brown fox.",
    "Olá, tudo bem? Sim!",
    "  two leading, double  inner   and trailing spaces  ",
    "accents: é è ê ë à ç ñ ü ß",
    "unseen characters: 日本語, emoji 🙂, ligature ﬁ, tab\there",
    "",
    " ",
    "literal <eos> and <unk> and <0x41> stay text",
]


@pytest.fixture(scope="module", params=["unigram", "bpe"])
def tok(request):
  return subword.SentencePieceTokenizer.train(
      CORPUS, model_type=request.param, vocab_size=400)


def test_specials_at_ids_zero_to_three(tok):
  assert tok.kind == "sentencepiece"
  assert tok.vocab.tokens[:4] == SPECIALS
  assert [tok.vocab.id_to_token(i) for i in (PAD, BOS, EOS, UNK)] == list(
      SPECIALS)
  assert len(tok.vocab) == 400
  assert tok.vocab.token_to_id(tok.vocab.tokens[300]) == 300


@pytest.mark.parametrize("text", SAMPLES)
def test_decode_encode_is_exact(tok, text):
  ids = tok.encode(text)
  assert tok.decode(ids) == text
  assert tok.join(tok.split(text)) == text
  assert tok.vocab.encode(tok.split(text)) == ids
  assert not {PAD, BOS, EOS, UNK} & set(ids)  # no control ids from text
  assert tok.count_unknown(text) == 0


def test_decode_handles_specials_like_other_tokenizers(tok):
  ids = tok.encode("the fox")
  assert tok.decode([BOS] + ids + [EOS] + tok.encode("junk") + [PAD]) == (
      "the fox")
  assert tok.decode([PAD, PAD] + ids) == "the fox"
  assert tok.decode([UNK]) == "<unk>"
  with pytest.raises(IndexError):
    tok.decode([len(tok.vocab)])


def test_subwords_are_learned(tok):
  pieces = tok.split("The quick brown fox")
  assert len(pieces) < len("The quick brown fox")
  assert any(len(p) > 2 for p in pieces)


def test_save_load_round_trip(tok, tmp_path):
  path = tmp_path / "src_tokenizer.json"
  tok.save(str(path))
  payload = json.loads(path.read_text(encoding="utf-8"))
  assert payload["kind"] == "sentencepiece"
  assert payload["tokens"] == list(tok.vocab.tokens[4:])
  loaded = load_tokenizer(str(path))
  assert isinstance(loaded, subword.SentencePieceTokenizer)
  assert loaded.vocab == tok.vocab
  assert loaded.model_proto == tok.model_proto
  for text in SAMPLES + SOURCES:
    assert loaded.encode(text) == tok.encode(text)
    assert loaded.decode(tok.encode(text)) == text


def test_training_is_deterministic():
  for model_type in subword.MODEL_TYPES:
    a = subword.SentencePieceTokenizer.train(CORPUS, model_type, 360)
    b = subword.SentencePieceTokenizer.train(list(CORPUS), model_type, 360)
    assert a.model_proto == b.model_proto


def test_make_tokenizer_sentencepiece_reads_at_most_max_sentences():
  consumed = []

  def endless():
    for i in itertools.count():
      consumed.append(i)
      yield SOURCES[i % len(SOURCES)]

  tok = make_tokenizer("sentencepiece", endless(), spm={
      "model_type": "bpe", "vocab_size": 360, "max_sentences": 24})
  assert "sentencepiece" in tokenizers.TOKENIZER_KINDS
  assert isinstance(tok, subword.SentencePieceTokenizer)
  assert len(tok.vocab) == 360
  assert len(consumed) <= 25  # islice may pull one past the last one taken


def test_shared_vocabulary_covers_both_sides(tmp_path):
  texts = [text for pair in zip(SOURCES, TARGETS) for text in pair] * 2
  shared = make_tokenizer("sentencepiece", texts, spm={"vocab_size": 480})
  for text in SOURCES + TARGETS:
    assert shared.decode(shared.encode(text)) == text
  # Multi-character pieces of both languages made it into the vocabulary.
  for side in (SOURCES, TARGETS):
    pieces = sum(len(shared.split(text)) for text in side)
    assert pieces < 0.7 * sum(len(text) for text in side)
  assert shared.vocab.token_to_id("ão") != UNK
  shared.save(str(tmp_path / "src.json"))
  shared.save(str(tmp_path / "tgt.json"))
  src, tgt = (load_tokenizer(str(tmp_path / f"{s}.json"))
              for s in ("src", "tgt"))
  assert src.vocab == tgt.vocab == shared.vocab


def test_vocab_size_too_large_suggests_smaller():
  with pytest.raises(ConfigError,
                     match=r"data\.spm_vocab_size=5000 is too large.*<= \d+"):
    make_tokenizer("sentencepiece", CORPUS, spm={"vocab_size": 5000})
  with pytest.raises(ConfigError, match=r"data\.spm_vocab_size <= \d+"):
    make_tokenizer("sentencepiece", CORPUS,
                   spm={"vocab_size": 5000, "model_type": "bpe"})


def test_vocab_size_too_small_for_characters():
  with pytest.raises(ConfigError, match=r"too small.*at least \d+; raise it"):
    make_tokenizer("sentencepiece", CORPUS, spm={"vocab_size": 100})


@pytest.mark.parametrize("spm, match", [
    ({"model_type": "word"}, "spm_model_type"),
    ({"vocab_size": 0}, "spm_vocab_size"),
    ({"vocab_size": "8000"}, "spm_vocab_size"),
    ({"max_sentences": 0}, "spm_max_sentences"),
    ({"vocab": 10}, "unknown sentencepiece settings"),
])
def test_bad_settings(spm, match):
  with pytest.raises(ConfigError, match=match):
    make_tokenizer("sentencepiece", CORPUS, spm=spm)


def test_empty_text_is_a_data_error():
  with pytest.raises(DataError, match="no text"):
    make_tokenizer("sentencepiece", ["", ""], spm={"vocab_size": 300})


def test_load_rejects_broken_model(tmp_path, tok):
  path = tmp_path / "tok.json"
  tok.save(str(path))
  payload = json.loads(path.read_text(encoding="utf-8"))
  for broken, match in [
      (dict(payload, model="bm90IGEgbW9kZWw="), "unusable sentencepiece"),
      (dict(payload, model="***"), "unusable sentencepiece"),
      ({k: v for k, v in payload.items() if k != "model"}, "no 'model'"),
      (dict(payload, tokens=payload["tokens"][:-1]), "does not match"),
  ]:
    path.write_text(json.dumps(broken), encoding="utf-8")
    with pytest.raises(DataError, match=match):
      load_tokenizer(str(path))


def test_error_from_the_text_stream_is_kept():
  def stream():
    yield from CORPUS
    raise DataError("train.tsv:7: empty target")

  with pytest.raises(DataError, match=r"^train\.tsv:7: empty target$"):
    make_tokenizer("sentencepiece", stream(), spm={"vocab_size": 300})
