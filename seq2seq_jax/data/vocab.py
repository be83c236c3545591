"""Special tokens, vocabularies and the tokenizer base class.

Ids 0..3 are reserved for the special tokens in every vocabulary, so models,
losses and decoders can rely on `PAD == 0` etc. without looking at the vocab:

  PAD  padding; masked out of losses and attention.
  BOS  fed to the decoder as the first input token.
  EOS  the decoder's last output token; decoding stops there.
  UNK  any token the vocabulary does not hold.

The concrete tokenizers build on `Tokenizer`: character and word ones in
`tokenizers.py`, SentencePiece in `subword.py`. Both import this module and
neither imports the other's module at load time, so there is no import cycle.
"""

import collections
import itertools
import json
from typing import Iterable, Iterator, Optional, Sequence

from seq2seq_jax.errors import ConfigError

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")



def content_ids(ids: Iterable[int]) -> Iterator[int]:
  """The ids a decoder output stands for: up to the first EOS, without PAD
  and BOS (decoded output is padded after EOS and may start with BOS)."""
  for i in ids:
    i = int(i)
    if i == EOS:
      return
    if i not in (PAD, BOS):
      yield i


class Vocab:
  """A fixed token <-> id mapping with the specials at ids 0..3.

  The special strings themselves are not looked up: a literal "<eos>" in the
  data maps to UNK, so text can never inject a control id (a literal "<eos>"
  in a source sentence would otherwise end decoding).
  """

  def __init__(self, tokens: Sequence[str]):
    """Args:
      tokens: the regular tokens, in id order (they get ids 4, 5, ...); no
        duplicates, no special strings.
    """
    tokens = list(tokens)
    self._id_of = {}
    for tok in tokens:
      if not isinstance(tok, str) or not tok:
        raise ValueError(
            f"vocabulary tokens must be non-empty strings, got {tok!r}")
      if tok in SPECIALS:
        raise ValueError(
            f"vocabulary token {tok!r} is reserved for a special token")
      if tok in self._id_of:
        raise ValueError(f"duplicate vocabulary token {tok!r}")
      self._id_of[tok] = len(SPECIALS) + len(self._id_of)
    self._tokens = SPECIALS + tuple(tokens)

  @classmethod
  def build(cls, token_lists: Iterable[Sequence[str]], min_freq: int = 1,
            max_size: Optional[int] = None) -> "Vocab":
    """Counts tokens and keeps the frequent ones.

    Args:
      token_lists: iterable of token sequences (one per sentence).
      min_freq: keep tokens seen at least this many times.
      max_size: if set, keep at most this many regular tokens (the 4
        specials come on top, so `len(vocab) <= max_size + 4`).

    Returns:
      A Vocab whose regular tokens are sorted by frequency (descending), ties
      broken by the token string, so equal data gives equal ids everywhere.
    """
    if (isinstance(min_freq, bool) or not isinstance(min_freq, int)
        or min_freq < 1):
      raise ConfigError(f"min_freq must be an integer >= 1, got {min_freq!r}")
    if max_size is not None and (
        isinstance(max_size, bool) or not isinstance(max_size, int)
        or max_size < 1):
      raise ConfigError(
          f"max_size must be None (no cap) or an integer >= 1, "
          f"got {max_size!r}")
    # One C-level counting pass over all tokens (an update per sentence
    # costs a Python call each: 0.2 s on the default run's 100,000 texts).
    counts = collections.Counter(itertools.chain.from_iterable(token_lists))
    for special in SPECIALS:
      counts.pop(special, None)
    kept = sorted((tok for tok, n in counts.items() if n >= min_freq),
                  key=lambda tok: (-counts[tok], tok))
    if max_size is not None:
      kept = kept[:max_size]
    return cls(kept)

  def __len__(self) -> int:
    return len(self._tokens)

  def __eq__(self, other) -> bool:
    return isinstance(other, Vocab) and self._tokens == other._tokens

  def __repr__(self) -> str:
    return f"Vocab(size={len(self)})"

  @property
  def tokens(self) -> tuple:
    """All tokens in id order, specials first."""
    return self._tokens

  def token_to_id(self, token: str) -> int:
    return self._id_of.get(token, UNK)

  def id_to_token(self, i: int) -> str:
    if not 0 <= i < len(self._tokens):
      raise IndexError(f"token id {i} outside vocabulary of size {len(self)}")
    return self._tokens[i]

  def encode(self, tokens: Iterable[str]) -> list:
    """tokens -> list[int]; unknown tokens become UNK."""
    return [self._id_of.get(tok, UNK) for tok in tokens]

  def decode(self, ids: Iterable[int]) -> list:
    """ids -> list[str], specials rendered as their strings."""
    return [self.id_to_token(int(i)) for i in ids]


class Tokenizer:
  """Shared behaviour; subclasses define `kind`, `split` and `join`."""

  kind = None

  def __init__(self, vocab: Vocab):
    self.vocab = vocab

  def __repr__(self) -> str:
    return f"{type(self).__name__}(vocab_size={len(self.vocab)})"

  def split(self, text: str) -> list:
    raise NotImplementedError

  def join(self, tokens: Sequence[str]) -> str:
    raise NotImplementedError

  @classmethod
  def build(cls, texts: Iterable[str], min_freq: int = 1,
            max_size: Optional[int] = None):
    """Builds the vocabulary from `texts` (see `Vocab.build`)."""
    splitter = cls(Vocab([]))
    vocab = Vocab.build((splitter.split(t) for t in texts), min_freq, max_size)
    return cls(vocab)

  def encode(self, text: str) -> list:
    """text -> list[int] token ids, without BOS/EOS."""
    return self.vocab.encode(self.split(text))

  def decode(self, ids: Iterable[int]) -> str:
    """ids -> text: stops at the first EOS, skips PAD and BOS.

    Decoded model output is padded after EOS and may start with BOS, so both
    are dropped rather than rendered. UNK renders as "<unk>".
    """
    return self.join([self.vocab.id_to_token(i) for i in content_ids(ids)])

  def count_unknown(self, text: str) -> int:
    """Number of tokens of `text` that the vocabulary maps to UNK."""
    return sum(1 for i in self.encode(text) if i == UNK)

  def save(self, path: str) -> None:
    """Writes `{"kind": ..., "tokens": [...]}` (regular tokens in id order)."""
    self._write(path)

  def _write(self, path: str, **extra) -> None:
    payload = {"kind": self.kind,
               "tokens": list(self.vocab.tokens[len(SPECIALS):]), **extra}
    with open(path, "w", encoding="utf-8") as f:
      json.dump(payload, f, ensure_ascii=False, indent=0)
      f.write("\n")
