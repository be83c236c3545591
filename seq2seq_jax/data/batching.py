"""The shape rules of batches: bucket boundaries, the batch layout
(`fill_batch`, filler rows with weight 0), the width of an evaluation split,
and the one decode-length rule. `pipeline.Batches` builds the batches.
"""

import bisect
from typing import Callable, Iterable, Sequence

import numpy as np

from seq2seq_jax.data.vocab import BOS, EOS, PAD
from seq2seq_jax.errors import ConfigError

TOO_LONG_MODES = ("error", "drop", "truncate")


def encode_pairs(pairs: Sequence[tuple], src_tok, tgt_tok) -> tuple:
  """Encodes string pairs to id arrays, without BOS/EOS.

  Returns:
    (src_ids, tgt_ids): two lists of int32 arrays `[length]`, one per pair.
  """
  src_ids = [np.asarray(src_tok.encode(src), np.int32) for src, _ in pairs]
  tgt_ids = [np.asarray(tgt_tok.encode(tgt), np.int32) for _, tgt in pairs]
  return src_ids, tgt_ids


def pair_encoder(src_tok, tgt_tok) -> Callable:
  """A function (source, target) -> (src_ids, tgt_ids), two lists of ints
  (`Batches` reads their lengths and <unk> counts in plain Python, then
  makes arrays only of the examples it batches); the `encode` argument of
  `pipeline.Batches`."""

  def encode(pair):
    src, tgt = pair
    return src_tok.encode(src), tgt_tok.encode(tgt)

  return encode


def parse_boundaries(value, name: str = "boundaries") -> tuple:
  """"8,16,32" or [8, 16, 32] -> (8, 16, 32).

  Args:
    value: a comma-separated string or a sequence of ints.
    name: the config field, used in the error message.

  Raises:
    ConfigError: unless the values are strictly increasing positive ints.
  """
  error = ConfigError(
      f"{name} must be strictly increasing positive integers such as "
      f"'8,16,32', got {value!r}")
  if isinstance(value, str):
    items = [item.strip() for item in value.split(",")]
    if not all(item.isascii() and item.isdigit() for item in items):
      raise error
    numbers = [int(item) for item in items]
  elif isinstance(value, (list, tuple)):
    numbers = []
    for item in value:
      if isinstance(item, (bool, np.bool_)) or not isinstance(
          item, (int, np.integer)):
        raise error
      numbers.append(int(item))
  else:
    raise error
  if not numbers or numbers[0] < 1 or any(
      a >= b for a, b in zip(numbers, numbers[1:])):
    raise error
  return tuple(numbers)


def bucket_for(length: int, boundaries: Sequence[int]) -> int:
  """The smallest boundary >= length, or -1 if length exceeds them all."""
  k = bisect.bisect_left(boundaries, length)
  return boundaries[k] if k < len(boundaries) else -1


def check_arguments(batch_size, seed, too_long):
  if isinstance(batch_size, bool) or not isinstance(
      batch_size, (int, np.integer)) or batch_size < 1:
    raise ConfigError(
        f"batch_size must be an integer >= 1, got {batch_size!r}")
  if isinstance(seed, bool) or not isinstance(
      seed, (int, np.integer)) or seed < 0:
    raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
  if too_long not in TOO_LONG_MODES:
    raise ConfigError(
        f"data.too_long must be one of {', '.join(TOO_LONG_MODES)}, "
        f"got {too_long!r}")


def decode_length(max_decode_len: int, tgt_boundaries) -> int:
  """The one rule for how many tokens decoding may emit, used by training's
  evaluation, `evaluate` and `translate`: `eval.max_decode_len`, or else the
  last target boundary (the longest target training reads, <eos> included)."""
  return int(max_decode_len) or int(parse_boundaries(tgt_boundaries)[-1])


def eval_width(lengths: Iterable[int], boundaries: Sequence[int]) -> int:
  """The padded width of an evaluation split: the smallest boundary that fits
  its longest example, or, past the last boundary, that length rounded up to
  a multiple of 8. Evaluation never drops or cuts an example
  (`data.too_long` is a rule for training only)."""
  longest = max(lengths, default=1)
  for b in boundaries:
    if b >= longest:
      return int(b)
  return int(-(-longest // 8) * 8)


# The arrays of a batch that a model's train and eval steps read (the rest,
# `tgt_len` and `index`, serve the host).
MODEL_KEYS = ("src", "src_len", "tgt_in", "tgt_out", "weights")


def fill_batch(shape: tuple, batch_size: int, rows: Iterable) -> dict:
  """A batch of `shape` (S, T) from rows (src, tgt, index), filler after."""
  s, t = shape
  b = batch_size
  batch = {
      "src": np.full((b, s), PAD, np.int32),
      "src_len": np.zeros((b,), np.int32),
      "tgt_in": np.full((b, t), PAD, np.int32),
      "tgt_out": np.full((b, t), PAD, np.int32),
      "tgt_len": np.zeros((b,), np.int32),
      "weights": np.zeros((b, t), np.float32),
      "index": np.full((b,), -1, np.int32),
  }
  for row, (src, tgt, index) in enumerate(rows):
    n = len(tgt)
    batch["src"][row, :len(src)] = src
    batch["src_len"][row] = len(src)
    batch["tgt_in"][row, 0] = BOS
    batch["tgt_in"][row, 1:n + 1] = tgt
    batch["tgt_out"][row, :n] = tgt
    batch["tgt_out"][row, n] = EOS
    batch["tgt_len"][row] = n + 1
    batch["weights"][row, :n + 1] = 1.0
    batch["index"][row] = index
  return batch


def too_long_message(num_over, total, src_lens, tgt_lens, max_src, max_tgt):
  parts = []
  if src_lens.max(initial=0) > max_src:
    parts.append(
        f"longest source has {int(src_lens.max())} tokens > largest "
        f"data.src_boundaries entry {max_src}")
  if tgt_lens.max(initial=0) > max_tgt:
    parts.append(
        f"longest target has {int(tgt_lens.max()) - 1}+1 (EOS) tokens > "
        f"largest data.tgt_boundaries entry {max_tgt}")
  return (f"{num_over} of {total} examples are longer than the largest "
          f"bucket ({'; '.join(parts)}); raise the boundaries or set "
          "data.too_long to 'drop' or 'truncate'")
