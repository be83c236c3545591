"""The names of the splits every data source returns, apart from the
dispatch in `sources.py`, so the sources that `sources.py` loads lazily
(`tfds_source.py`) can use them without importing their dispatcher back.

Each split is a random-access sequence of (source, target) string pairs:
len(split), split[i] for 0 <= i < len(split), and iteration in order (see
`sources.load_splits`).
"""

SPLITS = ("train", "valid", "test")
