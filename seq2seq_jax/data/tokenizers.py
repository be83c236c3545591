"""The character and word tokenizers, and making or loading any tokenizer.

Every vocabulary reserves ids 0..3 for PAD, BOS, EOS and UNK (`vocab.py`,
whose names are re-exported here).

A tokenizer is saved to a workdir as JSON, `{"kind": "char"|"word",
"tokens": [...]}`, where `tokens` lists the non-special tokens in id order
(ids 4, 5, ...), so a saved tokenizer reproduces the ids exactly. The
"sentencepiece" kind (`subword.py`) writes the same file with its model
added under "model".
"""

import json
from typing import Iterable, Optional, Sequence

from seq2seq_jax.data.vocab import (  # noqa: F401  (re-exported: the ids every module uses)
    BOS, EOS, PAD, SPECIALS, UNK, Tokenizer, Vocab, content_ids)
from seq2seq_jax.errors import ConfigError, DataError

TOKENIZER_KINDS = ("char", "word", "sentencepiece")


class CharTokenizer(Tokenizer):
  """One token per Unicode code point; whitespace is a token like any other."""

  kind = "char"

  def split(self, text: str) -> list:
    return list(text)

  def join(self, tokens: Sequence[str]) -> str:
    return "".join(tokens)


class WordTokenizer(Tokenizer):
  """Whitespace-separated words; decoding joins them with single spaces."""

  kind = "word"

  def split(self, text: str) -> list:
    return text.split()

  def join(self, tokens: Sequence[str]) -> str:
    return " ".join(tokens)


_CLASSES = {cls.kind: cls for cls in (CharTokenizer, WordTokenizer)}


def make_tokenizer(kind: str, texts: Iterable[str], min_freq: int = 1,
                   max_size: Optional[int] = None,
                   spm: Optional[dict] = None):
  """Builds a tokenizer of `kind` (one of TOKENIZER_KINDS) from `texts`.

  "char" and "word" count `texts` (all of it; min_freq and max_size apply).
  "sentencepiece" trains a model on at most spm["max_sentences"] of
  `texts` (a stream is read no further) with spm["model_type"] and
  spm["vocab_size"] (see `subword.train_sentencepiece`; missing keys take
  its defaults); min_freq and max_size do not apply to it.
  """
  if kind == "sentencepiece":
    from seq2seq_jax.data import subword  # pylint: disable=g-import-not-at-top
    return subword.train_sentencepiece(texts, spm)
  if kind not in _CLASSES:
    raise ConfigError(
        f"tokenizer kind must be one of {', '.join(TOKENIZER_KINDS)}, "
        f"got {kind!r}")
  return _CLASSES[kind].build(texts, min_freq=min_freq, max_size=max_size)


def load_tokenizer(path: str):
  """Reads a tokenizer written by `save`; any problem is a DataError."""
  try:
    with open(path, encoding="utf-8") as f:
      payload = json.load(f)
  except FileNotFoundError:
    raise DataError(f"tokenizer file not found: {path}") from None
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise DataError(f"{path}: not a readable tokenizer file ({e})") from None
  if not isinstance(payload, dict):
    raise DataError(f"{path}: not a tokenizer file (expected a JSON object)")
  kind, tokens = payload.get("kind"), payload.get("tokens")
  if kind == "sentencepiece":
    from seq2seq_jax.data import subword  # pylint: disable=g-import-not-at-top
    return subword.SentencePieceTokenizer.from_payload(payload, path)
  if not isinstance(kind, str) or kind not in _CLASSES:
    raise DataError(
        f"{path}: tokenizer kind must be one of {', '.join(TOKENIZER_KINDS)}, "
        f"got {kind!r}")
  if not isinstance(tokens, list):
    raise DataError(f"{path}: tokenizer file has no 'tokens' list")
  try:
    vocab = Vocab(tokens)
  except ValueError as e:
    raise DataError(f"{path}: {e}") from None
  return _CLASSES[kind](vocab)
