"""Built-in synthetic tasks: generated in memory, no download.

Every task maps a seed and split sizes to the same examples on every machine
(only `random.Random(seed)` is used; never Python's salted `hash`). Sources are
unique across and within the three splits. The test split is drawn first,
then valid, then train, so growing `num_train` leaves valid and test unchanged
(as long as the request stays below half of what the task can produce; beyond
that all possible sources are enumerated and shuffled instead).

Tasks (`min_len`/`max_len` bound the source length; defaults in brackets):

  copy      "qbxe"       -> "qbxe"        letters a-z, length [4, 16]
  reverse   "qbxe"       -> "exbq"        letters a-z, length [4, 16]
  sort      "qbxe"       -> "beqx"        letters a-z, length [4, 16]
  addition  "123+4567"   -> "4690"        each operand has [1, 5] digits
                                          (min_len/max_len count digits)
  date      see below                     min_len/max_len do not apply

`date` is date normalisation: the source is a date written the way people
write it, in lower case; the target is ISO 8601 `YYYY-MM-DD`. Dates are drawn
uniformly from 1700-01-01..2299-12-31, and the format uniformly from these 13
(examples for 2020-03-03, a Tuesday):

  weekday_long    "tuesday, march 3 2020"    weekday from the calendar
  month_day       "march 3, 2020"
  day_month       "3 march 2020"
  day_abbr_dot    "3 mar. 2020"              always a dot, also "may."
  the_ordinal_of  "the 3rd of march 2020"
  month_ordinal   "march 3rd, 2020"
  abbr_month_day  "mar 3 2020"
  weekday_abbr    "tue 3 mar 2020"
  us_slash_yy     "03/03/20"                 mm/dd/yy, years 1950..2049
  us_slash        "3/3/2020"                 m/d/yyyy
  eu_dots         "03.03.2020"               dd.mm.yyyy
  iso_slash       "2020/03/03"               yyyy/mm/dd
  compact         "20200303"                 yyyymmdd

Abbreviations are the first three letters of the English name ("sep", "thu").
The mapping source -> target is a function: each numeric format has one fixed
field order (slashes with the year last are US month-first, dots are European
day-first) and two-digit years only occur for 1950..2049 (yy < 50 -> 20yy,
else 19yy), and no two formats can produce the same string.
"""

import datetime
import random
from typing import Callable, NamedTuple, Optional

from seq2seq_jax.errors import ConfigError

TASKS = ("date", "reverse", "copy", "sort", "addition")

_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_DEFAULT_LETTER_LEN = (4, 16)
_DEFAULT_DIGITS = (1, 5)

_DESCRIPTIONS = {
    "date": "date normalisation: 'tuesday, march 3 2020' -> '2020-03-03' "
            "(13 surface formats, years 1700-2299)",
    "reverse": "reverse a string of letters: 'qbxe' -> 'exbq'",
    "copy": "copy a string of letters: 'qbxe' -> 'qbxe'",
    "sort": "sort the letters of a string: 'qbxe' -> 'beqx'",
    "addition": "add two decimal integers: '123+4567' -> '4690'",
}


class _TaskSpec(NamedTuple):
  """How one task makes examples; (lo, hi) are the resolved length bounds."""
  sample: Callable  # (rng, lo, hi) -> (source, target), one random example.
  count: Callable  # (lo, hi) -> number of distinct sources that exist.
  enumerate_all: Callable  # (lo, hi) -> iterator over every example.
  default_lengths: Optional[tuple]  # (min_len, max_len); None: no lengths.


def describe_task(name: str) -> str:
  """One-line description of task `name`, for logs and the README."""
  _check_name(name)
  return f"{name}: {_DESCRIPTIONS[name]}"


def _check_name(name):
  if name not in TASKS:
    raise ConfigError(
        f"unknown task {name!r}; tasks: {', '.join(TASKS)}")


# ---------------------------------------------------------------------------
# Dates.

_MONTHS = ("january", "february", "march", "april", "may", "june", "july",
           "august", "september", "october", "november", "december")
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday",
             "saturday", "sunday")
_FIRST_DAY = datetime.date(1700, 1, 1).toordinal()
_LAST_DAY = datetime.date(2299, 12, 31).toordinal()
# Two-digit years are only unambiguous inside one century around the pivot.
_FIRST_YY_DAY = datetime.date(1950, 1, 1).toordinal()
_LAST_YY_DAY = datetime.date(2049, 12, 31).toordinal()


def ordinal_suffix(day: int) -> str:
  """1 -> "st", 2 -> "nd", 3 -> "rd", 11..13 -> "th", 21 -> "st", ..."""
  if 11 <= day % 100 <= 13:
    return "th"
  return {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


def _month(d):
  return _MONTHS[d.month - 1]


def _mon(d):
  return _MONTHS[d.month - 1][:3]


def _weekday(d):
  return _WEEKDAYS[d.weekday()]


# name -> (formatter, uses a two-digit year). Order is part of the seeded
# output: append new formats at the end.
DATE_FORMATS = {
    "weekday_long": (
        lambda d: f"{_weekday(d)}, {_month(d)} {d.day} {d.year}", False),
    "month_day": (lambda d: f"{_month(d)} {d.day}, {d.year}", False),
    "day_month": (lambda d: f"{d.day} {_month(d)} {d.year}", False),
    "day_abbr_dot": (lambda d: f"{d.day} {_mon(d)}. {d.year}", False),
    "the_ordinal_of": (
        lambda d: f"the {d.day}{ordinal_suffix(d.day)} of {_month(d)} {d.year}",
        False),
    "month_ordinal": (
        lambda d: f"{_month(d)} {d.day}{ordinal_suffix(d.day)}, {d.year}",
        False),
    "abbr_month_day": (lambda d: f"{_mon(d)} {d.day} {d.year}", False),
    "weekday_abbr": (
        lambda d: f"{_weekday(d)[:3]} {d.day} {_mon(d)} {d.year}", False),
    "us_slash_yy": (
        lambda d: f"{d.month:02d}/{d.day:02d}/{d.year % 100:02d}", True),
    "us_slash": (lambda d: f"{d.month}/{d.day}/{d.year}", False),
    "eu_dots": (lambda d: f"{d.day:02d}.{d.month:02d}.{d.year}", False),
    "iso_slash": (lambda d: f"{d.year}/{d.month:02d}/{d.day:02d}", False),
    "compact": (lambda d: f"{d.year}{d.month:02d}{d.day:02d}", False),
}
_FORMAT_NAMES = tuple(DATE_FORMATS)


def format_date(d: datetime.date, fmt: str) -> str:
  """Writes `d` in surface format `fmt` (a key of DATE_FORMATS)."""
  formatter, two_digit_year = DATE_FORMATS[fmt]
  if two_digit_year and not 1950 <= d.year <= 2049:
    raise ValueError(f"format {fmt!r} only covers years 1950..2049, got {d}")
  return formatter(d)


def _day_range(fmt):
  if DATE_FORMATS[fmt][1]:
    return _FIRST_YY_DAY, _LAST_YY_DAY
  return _FIRST_DAY, _LAST_DAY


def _date_sample(rng, lo, hi):
  del lo, hi
  fmt = _FORMAT_NAMES[rng.randrange(len(_FORMAT_NAMES))]
  first, last = _day_range(fmt)
  d = datetime.date.fromordinal(rng.randint(first, last))
  return format_date(d, fmt), d.isoformat()


def _date_count(lo, hi):
  del lo, hi
  return sum(last - first + 1
             for first, last in map(_day_range, _FORMAT_NAMES))


def _date_all(lo, hi):
  del lo, hi
  for fmt in _FORMAT_NAMES:
    first, last = _day_range(fmt)
    for day in range(first, last + 1):
      d = datetime.date.fromordinal(day)
      yield format_date(d, fmt), d.isoformat()


# ---------------------------------------------------------------------------
# Letter strings: copy, reverse, sort.


def _letters_sample(rng, lo, hi):
  # Length first, then letters: uniform over strings would put nearly all
  # examples at max_len.
  n = rng.randint(lo, hi)
  return "".join(rng.choices(_LETTERS, k=n))


def _letters_count(lo, hi):
  return sum(len(_LETTERS) ** n for n in range(lo, hi + 1))


def _letters_all(lo, hi):
  def strings(n):
    if n == 0:
      yield ""
      return
    for prefix in strings(n - 1):
      for c in _LETTERS:
        yield prefix + c
  for n in range(lo, hi + 1):
    yield from strings(n)


def _letter_task(target_fn):
  def sample(rng, lo, hi):
    source = _letters_sample(rng, lo, hi)
    return source, target_fn(source)

  def enumerate_all(lo, hi):
    return ((s, target_fn(s)) for s in _letters_all(lo, hi))

  return _TaskSpec(sample, _letters_count, enumerate_all, _DEFAULT_LETTER_LEN)


# ---------------------------------------------------------------------------
# Addition.


def _digits_range(n):
  """Numbers with exactly n digits, no leading zeros (0 has one digit)."""
  return (0 if n == 1 else 10 ** (n - 1)), 10 ** n - 1


def _operand(rng, lo, hi):
  first, last = _digits_range(rng.randint(lo, hi))
  return rng.randint(first, last)


def _addition_sample(rng, lo, hi):
  a, b = _operand(rng, lo, hi), _operand(rng, lo, hi)
  return f"{a}+{b}", str(a + b)


def _addition_count(lo, hi):
  first, last = _digits_range(lo)[0], _digits_range(hi)[1]
  return (last - first + 1) ** 2


def _addition_all(lo, hi):
  first, last = _digits_range(lo)[0], _digits_range(hi)[1]
  for a in range(first, last + 1):
    for b in range(first, last + 1):
      yield f"{a}+{b}", str(a + b)


# ---------------------------------------------------------------------------
# Registry and split generation.

_REGISTRY = {
    "date": _TaskSpec(_date_sample, _date_count, _date_all, None),
    "copy": _letter_task(lambda s: s),
    "reverse": _letter_task(lambda s: s[::-1]),
    "sort": _letter_task(lambda s: "".join(sorted(s))),
    "addition": _TaskSpec(_addition_sample, _addition_count, _addition_all,
                          _DEFAULT_DIGITS),
}


def _check_count(name, value, minimum):
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _length_bounds(name, default, min_len, max_len):
  if default is None:
    if min_len is not None or max_len is not None:
      raise ConfigError(
          f"task {name!r} has no length setting; leave min_len and max_len "
          f"unset (None), got min_len={min_len!r}, max_len={max_len!r}")
    return None, None
  lo = default[0] if min_len is None else min_len
  hi = default[1] if max_len is None else max_len
  _check_count("min_len", lo, 1)
  _check_count("max_len", hi, 1)
  if lo > hi:
    raise ConfigError(
        f"task {name!r}: min_len={lo} is larger than max_len={hi}")
  # Addition enumerates numbers by digit count; 10**hi must stay sane.
  if name == "addition" and hi > 18:
    raise ConfigError(
        f"task 'addition': max_len (digits) must be <= 18, got {hi}")
  return lo, hi


def make_task(name: str, seed: int, num_train: int, num_valid: int,
              num_test: int, min_len: Optional[int] = None,
              max_len: Optional[int] = None) -> dict:
  """Generates a built-in task's three splits.

  Args:
    name: one of TASKS.
    seed: non-negative integer; the output is a pure function of the args.
    num_train, num_valid, num_test: examples per split (>= 0).
    min_len, max_len: source length bounds (digits per operand for
      addition); None means the task default. Must be None for `date`.

  Returns:
    {"train", "valid", "test"} -> list of (source, target) string pairs, no
    source repeated anywhere across the three lists.
  """
  _check_name(name)
  _check_count("seed", seed, 0)
  for field, value in (("num_train", num_train), ("num_valid", num_valid),
                       ("num_test", num_test)):
    _check_count(field, value, 0)
  sample, count, enumerate_all, default = _REGISTRY[name]
  lo, hi = _length_bounds(name, default, min_len, max_len)
  total = num_train + num_valid + num_test
  capacity = count(lo, hi)
  if total > capacity:
    bounds = "" if lo is None else f" with min_len={lo}, max_len={hi}"
    raise ConfigError(
        f"task {name!r}{bounds} has only {capacity} distinct examples, but "
        f"num_train+num_valid+num_test = {total}; lower the sizes"
        + ("" if lo is None else " or widen the length range"))

  rng = random.Random(seed)
  if 2 * total <= capacity:
    examples = _sample_unique(lambda: sample(rng, lo, hi), total)
  else:
    # Near capacity, rejection sampling would spend most draws on repeats.
    examples = list(enumerate_all(lo, hi))
    rng.shuffle(examples)
    examples = examples[:total]

  test = examples[:num_test]
  valid = examples[num_test:num_test + num_valid]
  train = examples[num_test + num_valid:]
  return {"train": train, "valid": valid, "test": test}


def _sample_unique(draw: Callable[[], tuple], total: int) -> list:
  """Draws until `total` examples with distinct sources were collected."""
  seen = set()
  examples = []
  # With total <= capacity / 2 acceptance stays high; the bound only guards
  # against a bug turning this into an endless loop.
  draws_left = 1000 * total + 10_000
  while len(examples) < total:
    if draws_left == 0:
      raise RuntimeError(f"no {total} distinct examples after many draws")
    draws_left -= 1
    src, tgt = draw()
    if src not in seen:
      seen.add(src)
      examples.append((src, tgt))
  return examples
