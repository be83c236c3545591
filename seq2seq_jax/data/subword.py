"""SentencePiece subword tokenizers (unigram or BPE) trained on the data.

A model is trained in memory from the training split's text
(`SentencePieceTokenizer.train`) and saved inside the same JSON tokenizer
file the char/word tokenizers write, `{"kind": "sentencepiece", "tokens":
[...], "model": <base64 of the serialized model proto>}`, so a workdir keeps
its `src_tokenizer.json` / `tgt_tokenizer.json` and `load_tokenizer` restores
the exact model on resume and in `translate`.

Ids 0..3 are our PAD, BOS, EOS and UNK (the model is trained with those ids
and piece strings), so models and decoders see no difference from the other
tokenizers.

Detokenization is exact: `decode(encode(x)) == x` for any text, because

  * normalization is the identity (no NFKC: accents, ligatures, full-width
    forms and control characters are kept as they are);
  * whitespace is kept (no collapsing of repeated spaces, leading or
    trailing spaces survive; the dummy-prefix space is removed on decode);
  * characters outside the vocabulary fall back to UTF-8 byte pieces
    (`<0xE6>` ...), so text never becomes <unk>. 256 of the vocabulary's ids
    are these byte pieces, so `vocab_size` must exceed 4 + 256 + the number
    of distinct characters kept.

What is not exact: the character U+2581 "▁", which SentencePiece uses to mark
spaces, decodes as a plain space. UNK (id 3) never comes out of `encode`; in
model output it renders as "<unk>". Byte pieces that a model emits in an
invalid order decode to U+FFFD.

Training is deterministic given the same text, settings and sentencepiece
version (the thread count is fixed, because the result depends on it).
"""

import base64
import binascii
import io
import itertools
import re
from typing import Iterable, Optional, Sequence

from seq2seq_jax.data.vocab import BOS, EOS, PAD, SPECIALS, UNK, Tokenizer, Vocab, content_ids
from seq2seq_jax.errors import ConfigError, DataError

MODEL_TYPES = ("unigram", "bpe")
DEFAULTS = {"model_type": "unigram", "vocab_size": 8000,
            "max_sentences": 1_000_000}
NUM_BYTE_PIECES = 256
# SentencePiece's result depends on its number of threads, so it is fixed
# rather than taken from the machine.
_NUM_THREADS = 16


def _import_sentencepiece():
  try:
    import sentencepiece  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ConfigError(
        "the sentencepiece tokenizer needs the sentencepiece package: "
        "pip install sentencepiece") from None
  return sentencepiece


def _processor(model_proto: bytes):
  spm = _import_sentencepiece()
  sp = spm.SentencePieceProcessor()
  try:
    sp.LoadFromSerializedProto(model_proto)
  except RuntimeError as e:
    raise ValueError(f"not a SentencePiece model ({_reason(e)})") from None
  return sp


def _reason(error: Exception) -> str:
  """SentencePiece's message without its "INTERNAL: file.cc(123) [...]"."""
  text = str(error).strip()
  return re.sub(r"^\w+: \S+\(\d+\) \[.*?\]\s*", "", text) or text


class SentencePieceTokenizer(Tokenizer):
  """A trained SentencePiece model behind the tokenizer interface.

  `split` gives the pieces ("▁the", "<0xE6>", ...), `join` and `decode`
  detokenize exactly; `vocab` lists the pieces in id order, specials first.
  """

  kind = "sentencepiece"

  def __init__(self, model_proto: bytes):
    """Args:
      model_proto: a serialized SentencePiece model whose ids 0..3 are
        <pad>, <bos>, <eos>, <unk> (as `train` makes them).

    Raises:
      ValueError: not such a model.
    """
    sp = _processor(model_proto)
    pieces = [sp.IdToPiece(i) for i in range(sp.GetPieceSize())]
    if tuple(pieces[:len(SPECIALS)]) != SPECIALS or (
        (sp.pad_id(), sp.bos_id(), sp.eos_id(), sp.unk_id())
        != (PAD, BOS, EOS, UNK)):
      raise ValueError(
          f"SentencePiece model's first pieces are {pieces[:4]}, expected "
          f"{list(SPECIALS)} at ids {PAD}, {BOS}, {EOS}, {UNK}")
    super().__init__(Vocab(pieces[len(SPECIALS):]))
    self._sp = sp
    self.model_proto = bytes(model_proto)

  @classmethod
  def train(cls, texts: Iterable[str], model_type: str = "unigram",
            vocab_size: int = 8000,
            max_sentences: Optional[int] = 1_000_000
            ) -> "SentencePieceTokenizer":
    """Trains a model in memory on (a prefix of) `texts`.

    Args:
      texts: the training text, one sentence per item; may be a stream, of
        which only the first `max_sentences` items are read.
      model_type: "unigram" or "bpe".
      vocab_size: pieces in the model, the 4 specials and the 256 byte
        pieces included.
      max_sentences: most sentences to learn from; None = all of `texts`.

    Raises:
      ConfigError: bad settings, or a vocab_size the text cannot fill (the
        message gives the largest that works) or too small for its
        characters.
      DataError: no non-empty text.
    """
    if model_type not in MODEL_TYPES:
      raise ConfigError(
          f"data.spm_model_type must be one of {', '.join(MODEL_TYPES)}, "
          f"got {model_type!r}")
    if (isinstance(vocab_size, bool) or not isinstance(vocab_size, int)
        or vocab_size <= len(SPECIALS)):
      raise ConfigError(
          f"data.spm_vocab_size must be an integer > {len(SPECIALS)}, "
          f"got {vocab_size!r}")
    if max_sentences is not None and (
        isinstance(max_sentences, bool) or not isinstance(max_sentences, int)
        or max_sentences < 1):
      raise ConfigError(
          f"data.spm_max_sentences must be an integer >= 1, "
          f"got {max_sentences!r}")
    spm = _import_sentencepiece()
    taken, failed = [0], []

    def sentences():
      # SentencePiece turns an exception raised in here into its own
      # RuntimeError; keep the original (a DataError from a data file, say)
      # and end the text, so it can be re-raised as it was.
      try:
        for text in itertools.islice(texts, max_sentences):
          if not isinstance(text, str):
            raise DataError(
                f"sentencepiece training text must be str, got {text!r}")
          taken[0] += 1
          yield text
      except Exception as e:  # pylint: disable=broad-except
        failed.append(e)

    model = io.BytesIO()
    try:
      spm.SentencePieceTrainer.Train(
          sentence_iterator=sentences(), model_writer=model,
          model_type=model_type, vocab_size=vocab_size,
          pad_id=PAD, bos_id=BOS, eos_id=EOS, unk_id=UNK,
          pad_piece=SPECIALS[PAD], bos_piece=SPECIALS[BOS],
          eos_piece=SPECIALS[EOS], unk_piece=SPECIALS[UNK],
          unk_surface=SPECIALS[UNK],
          normalization_rule_name="identity", remove_extra_whitespaces=False,
          byte_fallback=True, character_coverage=0.9995,
          num_threads=_NUM_THREADS, minloglevel=2)
    except RuntimeError as e:
      if failed:
        raise failed[0] from None
      raise _training_error(e, vocab_size, taken[0]) from None
    if failed:
      raise failed[0]
    return cls(model.getvalue())

  @classmethod
  def build(cls, texts, min_freq=1, max_size=None):
    raise TypeError(
        "SentencePieceTokenizer is trained with SentencePieceTokenizer.train"
        " (or make_tokenizer('sentencepiece', texts, spm={...}))")

  def split(self, text: str) -> list:
    return self._sp.EncodeAsPieces(text)

  def join(self, tokens: Sequence[str]) -> str:
    return self._sp.DecodePieces(list(tokens))

  def encode(self, text: str) -> list:
    """text -> list[int] piece ids, without BOS/EOS."""
    return self._sp.EncodeAsIds(text)

  def decode(self, ids: Iterable[int]) -> str:
    """ids -> text: stops at the first EOS, skips PAD and BOS (as the other
    tokenizers' decode does); UNK renders as "<unk>"."""
    kept = list(content_ids(ids))
    for i in kept:
      self.vocab.id_to_token(i)  # IndexError outside the vocabulary
    return self._sp.DecodeIds(kept)

  def save(self, path: str) -> None:
    """Writes the JSON tokenizer file, the model base64-encoded inside."""
    self._write(path, model=base64.b64encode(self.model_proto).decode("ascii"))

  @classmethod
  def from_payload(cls, payload: dict, path: str) -> "SentencePieceTokenizer":
    """The tokenizer a `save`d JSON object describes; problems: DataError."""
    encoded = payload.get("model")
    if not isinstance(encoded, str):
      raise DataError(f"{path}: sentencepiece tokenizer file has no 'model'")
    try:
      proto = base64.b64decode(encoded.encode("ascii"), validate=True)
      tok = cls(proto)
    except (binascii.Error, UnicodeEncodeError, ValueError) as e:
      raise DataError(f"{path}: unusable sentencepiece model ({e})") from None
    if list(tok.vocab.tokens[len(SPECIALS):]) != payload.get("tokens"):
      raise DataError(
          f"{path}: the 'tokens' list does not match the sentencepiece model")
    return tok


def _training_error(error, vocab_size, num_sentences):
  message = str(error)
  too_high = re.search(r"Vocabulary size too high.*?<= (\d+)", message)
  if too_high:
    return ConfigError(
        f"data.spm_vocab_size={vocab_size} is too large for the "
        f"{num_sentences} training sentences (sentencepiece can make at "
        f"most {too_high.group(1)} pieces from them); set "
        f"data.spm_vocab_size <= {too_high.group(1)}")
  too_low = re.search(r"smaller than required_chars\. \d+ vs (\d+)", message)
  if too_low:
    need = int(too_low.group(1))
    return ConfigError(
        f"data.spm_vocab_size={vocab_size} is too small: the 4 specials, "
        f"{NUM_BYTE_PIECES} byte pieces and the "
        f"{need - len(SPECIALS) - NUM_BYTE_PIECES} distinct characters of "
        f"the training text need at least {need}; raise it")
  if "sentences_.empty()" in message:
    return DataError(
        f"no text to train sentencepiece on ({num_sentences} sentences, "
        "all empty)")
  return DataError(f"sentencepiece training failed: {_reason(error)}")


def train_sentencepiece(texts: Iterable[str], spm: Optional[dict] = None
                        ) -> SentencePieceTokenizer:
  """`SentencePieceTokenizer.train` with settings from a dict (the config's
  data.spm_* fields: model_type, vocab_size, max_sentences); missing keys
  take `DEFAULTS`."""
  settings = dict(DEFAULTS)
  if spm is not None:
    unknown = sorted(set(spm) - set(DEFAULTS))
    if unknown:
      raise ConfigError(
          f"unknown sentencepiece settings {unknown}; known: "
          f"{', '.join(DEFAULTS)}")
    settings.update(spm)
  return SentencePieceTokenizer.train(texts, **settings)
