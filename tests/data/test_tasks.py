"""Tests for seq2seq_jax.data.tasks."""

import calendar
import collections
import datetime
import re

import pytest

from seq2seq_jax.data import tasks
from seq2seq_jax.errors import ConfigError

SIZES = dict(num_train=300, num_valid=50, num_test=50)

_M = ("(january|february|march|april|may|june|july|august|september|"
      "october|november|december)")
_MON = "(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)"
_WD = "(monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
_WDA = "(mon|tue|wed|thu|fri|sat|sun)"
_D = r"([1-9]|[12]\d|3[01])"
_Y = r"(\d{4})"
_SUF = "(st|nd|rd|th)"

# Independent re-implementation of the format table: format -> (regex, how
# to turn the groups into (year, month, day)).
_MONTHS = [m.lower() for m in calendar.month_name[1:]]
_FORMATS = {
    "weekday_long": (rf"{_WD}, {_M} {_D} {_Y}", lambda g: (g[3], g[1], g[2])),
    "month_day": (rf"{_M} {_D}, {_Y}", lambda g: (g[2], g[0], g[1])),
    "day_month": (rf"{_D} {_M} {_Y}", lambda g: (g[2], g[1], g[0])),
    "day_abbr_dot": (rf"{_D} {_MON}\. {_Y}", lambda g: (g[2], g[1], g[0])),
    "the_ordinal_of": (rf"the {_D}{_SUF} of {_M} {_Y}",
                       lambda g: (g[3], g[2], g[0])),
    "month_ordinal": (rf"{_M} {_D}{_SUF}, {_Y}", lambda g: (g[3], g[0], g[1])),
    "abbr_month_day": (rf"{_MON} {_D} {_Y}", lambda g: (g[2], g[0], g[1])),
    "weekday_abbr": (rf"{_WDA} {_D} {_MON} {_Y}", lambda g: (g[3], g[2], g[1])),
    "us_slash_yy": (r"(\d\d)/(\d\d)/(\d\d)", lambda g: (g[2], g[0], g[1])),
    "us_slash": (r"(\d{1,2})/(\d{1,2})/(\d{4})", lambda g: (g[2], g[0], g[1])),
    "eu_dots": (r"(\d\d)\.(\d\d)\.(\d{4})", lambda g: (g[2], g[1], g[0])),
    "iso_slash": (r"(\d{4})/(\d\d)/(\d\d)", lambda g: (g[0], g[1], g[2])),
    "compact": (r"(\d{4})(\d\d)(\d\d)", lambda g: (g[0], g[1], g[2])),
}


def _classify(source):
  matches = [name for name, (pattern, _) in _FORMATS.items()
             if re.fullmatch(pattern, source)]
  assert len(matches) == 1, (source, matches)
  return matches[0]


def _month_number(text):
  if text.isdigit():
    return int(text)
  for k, name in enumerate(_MONTHS, start=1):
    if name == text or name[:3] == text:
      return k
  raise AssertionError(text)


def _parse_source(source):
  """Parses a date source independently of the generator's formatters."""
  fmt = _classify(source)
  pattern, fields = _FORMATS[fmt]
  groups = re.fullmatch(pattern, source).groups()
  year, month, day = fields(groups)
  year = int(year)
  if fmt == "us_slash_yy":
    year += 2000 if year < 50 else 1900
  return fmt, datetime.date(year, _month_number(month), int(day)), groups


@pytest.fixture(scope="module")
def date_sample():
  return tasks.make_task("date", seed=7, num_train=4000, num_valid=0,
                         num_test=0)["train"]


def _all_sources(splits):
  return [src for split in splits.values() for src, _ in split]


@pytest.mark.parametrize("name", tasks.TASKS)
def test_sizes_and_disjoint_splits(name):
  splits = tasks.make_task(name, seed=3, **SIZES)
  assert set(splits) == {"train", "valid", "test"}
  assert [len(splits[k]) for k in ("train", "valid", "test")] == [300, 50, 50]
  sources = _all_sources(splits)
  assert len(set(sources)) == len(sources)
  for split in splits.values():
    for src, tgt in split:
      assert isinstance(src, str) and isinstance(tgt, str) and src and tgt


@pytest.mark.parametrize("name", tasks.TASKS)
def test_deterministic_per_seed(name):
  a = tasks.make_task(name, seed=11, **SIZES)
  b = tasks.make_task(name, seed=11, **SIZES)
  c = tasks.make_task(name, seed=12, **SIZES)
  assert a == b
  assert a != c


def test_eval_splits_do_not_depend_on_train_size():
  small = tasks.make_task("copy", seed=5, num_train=10, num_valid=20,
                          num_test=30)
  big = tasks.make_task("copy", seed=5, num_train=500, num_valid=20,
                        num_test=30)
  assert small["valid"] == big["valid"] and small["test"] == big["test"]


def test_unknown_task_lists_names():
  with pytest.raises(ConfigError) as info:
    tasks.make_task("translate", seed=0, **SIZES)
  for name in tasks.TASKS:
    assert name in str(info.value)
  with pytest.raises(ConfigError):
    tasks.describe_task("translate")


@pytest.mark.parametrize("name", tasks.TASKS)
def test_describe_task_is_one_line(name):
  text = tasks.describe_task(name)
  assert name in text and "\n" not in text


def test_too_many_examples_requested():
  # Strings of 1..2 letters: 26 + 26**2 = 702 exist.
  with pytest.raises(ConfigError, match="702"):
    tasks.make_task("copy", seed=0, num_train=700, num_valid=2, num_test=1,
                    min_len=1, max_len=2)
  with pytest.raises(ConfigError, match="100"):
    tasks.make_task("addition", seed=0, num_train=101, num_valid=0,
                    num_test=0, max_len=1)


def test_exhausting_the_task_gives_every_example_once():
  splits = tasks.make_task("reverse", seed=0, num_train=600, num_valid=52,
                           num_test=50, min_len=1, max_len=2)
  sources = _all_sources(splits)
  assert len(sources) == 702 == len(set(sources))


@pytest.mark.parametrize("kwargs", [
    dict(min_len=0), dict(min_len=5, max_len=4), dict(max_len="8"),
])
def test_bad_lengths(kwargs):
  with pytest.raises(ConfigError):
    tasks.make_task("copy", seed=0, **SIZES, **kwargs)


def test_date_rejects_lengths_and_negative_seed():
  with pytest.raises(ConfigError, match="date"):
    tasks.make_task("date", seed=0, **SIZES, max_len=10)
  with pytest.raises(ConfigError, match="seed"):
    tasks.make_task("copy", seed=-1, **SIZES)


@pytest.mark.parametrize("name", ["copy", "reverse", "sort"])
def test_letter_tasks(name):
  splits = tasks.make_task(name, seed=1, **SIZES, min_len=3, max_len=9)
  expected = {"copy": lambda s: s, "reverse": lambda s: s[::-1],
              "sort": lambda s: "".join(sorted(s))}[name]
  lengths = set()
  for src, tgt in splits["train"]:
    assert re.fullmatch("[a-z]+", src)
    assert tgt == expected(src)
    lengths.add(len(src))
  assert lengths == set(range(3, 10))


def test_addition():
  splits = tasks.make_task("addition", seed=2, **SIZES, max_len=4)
  digit_counts = set()
  for src, tgt in splits["train"]:
    m = re.fullmatch(r"(0|[1-9]\d*)\+(0|[1-9]\d*)", src)
    assert m, src
    a, b = m.groups()
    assert int(tgt) == int(a) + int(b) and tgt == str(int(tgt))
    digit_counts.update((len(a), len(b)))
  assert digit_counts == {1, 2, 3, 4}


def test_date_targets_match_sources(date_sample):
  formats = set()
  for src, tgt in date_sample:
    assert src == src.lower()
    target = datetime.date.fromisoformat(tgt)
    fmt, parsed, groups = _parse_source(src)
    formats.add(fmt)
    assert parsed == target, (src, tgt)
    weekday = calendar.day_name[target.weekday()].lower()
    if fmt == "weekday_long":
      assert groups[0] == weekday, (src, tgt)
    if fmt == "weekday_abbr":
      assert groups[0] == weekday[:3], (src, tgt)
    if fmt in ("the_ordinal_of", "month_ordinal"):
      suffix = groups[1] if fmt == "the_ordinal_of" else groups[2]
      day = target.day
      want = "th" if day in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(
          day % 10, "th")
      assert suffix == want, src
  # The sample holds every format checked above: none of the checks is idle.
  assert {"weekday_long", "weekday_abbr", "the_ordinal_of", "month_ordinal"} <= formats


def test_date_formats_and_years(date_sample):
  formats = collections.Counter(_classify(src) for src, _ in date_sample)
  assert len(formats) >= 10
  assert len(formats) == len(tasks.DATE_FORMATS)
  years = [datetime.date.fromisoformat(t).year for _, t in date_sample]
  assert min(years) < 1750 and max(years) > 2250
  assert len({y // 100 for y in years}) == 6
  two_digit = [datetime.date.fromisoformat(t).year
               for s, t in date_sample if _classify(s) == "us_slash_yy"]
  assert two_digit and all(1950 <= y <= 2049 for y in two_digit)
  assert min(two_digit) < 2000 <= max(two_digit)


@pytest.mark.parametrize("day,suffix", [
    (1, "st"), (2, "nd"), (3, "rd"), (4, "th"), (11, "th"), (12, "th"),
    (13, "th"), (21, "st"), (22, "nd"), (23, "rd"), (30, "th"), (31, "st")])
def test_ordinal_suffix(day, suffix):
  assert tasks.ordinal_suffix(day) == suffix


def test_every_format_renders_a_known_date():
  d = datetime.date(2020, 3, 3)  # a Tuesday
  rendered = {fmt: tasks.format_date(d, fmt) for fmt in tasks.DATE_FORMATS}
  assert rendered["weekday_long"] == "tuesday, march 3 2020"
  assert rendered["us_slash_yy"] == "03/03/20"
  assert rendered["eu_dots"] == "03.03.2020"
  for source in rendered.values():
    assert _parse_source(source)[1] == d
  with pytest.raises(ValueError):
    tasks.format_date(datetime.date(1949, 12, 31), "us_slash_yy")
