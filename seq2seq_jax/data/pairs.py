"""The splits and the re-iterable stream of pairs that every data source
returns, apart from the dispatch in `sources.py`, so the sources that
`sources.py` loads lazily (`tfds_source.py`) can use them without importing
their dispatcher back.
"""

SPLITS = ("train", "valid", "test")


class PairStream:
  """A training split too large to hold: re-iterable (source, target) pairs.

  `open_pairs()` must return a fresh iterator over the pairs in the same
  order every time it is called; iterating a PairStream calls it, so each
  epoch reads the source again and memory does not grow with its size.
  """

  def __init__(self, open_pairs, description: str):
    self._open_pairs = open_pairs
    self.description = description

  def __iter__(self):
    return iter(self._open_pairs())

  def __repr__(self) -> str:
    return f"PairStream({self.description})"
