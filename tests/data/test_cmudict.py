"""The cmudict grapheme-to-phoneme source: split rule, references, stress."""

import pytest

from configs import default
from seq2seq_jax.data import cmudict_source, sources
from seq2seq_jax.errors import ConfigError


@pytest.fixture(scope="module")
def data_config():
  config = default.get_config()
  config.data.source = "cmudict"
  return config.data


@pytest.fixture(scope="module")
def splits(data_config):
  return sources.load_splits(data_config)


def test_splits_disjoint_by_word_and_sized(splits):
  words = {name: {w for w, _ in pairs} for name, pairs in splits.items()}
  assert not words["train"] & words["test"]
  assert not words["train"] & words["valid"]
  assert not words["valid"] & words["test"]
  total = sum(len(w) for w in words.values())
  assert total > 120_000  # the whole dictionary, not a sample
  for name in ("valid", "test"):
    assert 0.045 < len(words[name]) / total < 0.055  # 5 % each by default


def test_split_depends_on_the_word_only(data_config, splits):
  # The rule itself, recomputed independently of the loader.
  for word, _ in splits["test"][:200]:
    u = cmudict_source.word_fraction(word)
    assert 0.05 <= u < 0.10
  for word, _ in splits["valid"][:200]:
    assert cmudict_source.word_fraction(word) < 0.05
  other_seed = data_config.copy_and_resolve_references()
  other_seed.seed = 123
  assert sources.load_splits(other_seed)["test"] == splits["test"]


def test_every_pronunciation_kept_as_a_pair(splits):
  entries = cmudict_source.load_entries(stress=False)
  by_word = {}
  for name in ("train", "valid", "test"):
    for word, pron in splits[name]:
      by_word.setdefault(word, []).append(pron)
  assert by_word == entries
  assert sorted(entries["read"]) == ["R EH D", "R IY D"]
  multi = sum(len(v) > 1 for v in entries.values())
  assert multi > 7_000


def test_stress_marks_kept_or_stripped():
  assert cmudict_source.strip_stress("T AH0 M EY1 T OW2") == "T AH M EY T OW"
  assert cmudict_source.strip_stress("HH AH0 L OW1") == "HH AH L OW"
  with_stress = cmudict_source.load_entries(stress=True)
  assert "T AH0 M EY1 T OW2" in with_stress["tomato"]
  assert all(not any(c.isdigit() for c in p)
             for prons in cmudict_source.load_entries(stress=False).values() for p in prons)


def test_fractions_must_leave_valid_and_test(data_config):
  bad = data_config.copy_and_resolve_references()
  bad.test_fraction = 0.0
  with pytest.raises(ConfigError, match="test_fraction"):
    sources.load_splits(bad)
