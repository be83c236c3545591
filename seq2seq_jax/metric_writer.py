"""Where a run's numbers go: `metrics.jsonl` (one JSON object per event, with
`step` and `split`) and TensorBoard event files (tensorboardX, no TensorFlow).

A resumed run redoes the steps after its checkpoint, and so would log them
twice; the writer keeps each (split, step) once instead (`MetricWriter`).
"""

import json
import os
from typing import Optional

import numpy as np
from absl import logging


# Splits that describe the run rather than a step (the data report, written
# at every start): a resumed run writes one again only if it changed.
RUN_SPLITS = ("data",)


class MetricWriter:
  """Appends events to `workdir/metrics.jsonl` and `workdir/tensorboard/`,
  each (split, step) once.

  `resume(step)`, before the first write, drops what an interrupted run
  logged after the checkpoint this run resumes from (it logs those steps
  again); a record of a (split, step) the file already holds replaces it;
  a RUN_SPLITS record equal to the last one of its split is not repeated.
  metrics.jsonl is rewritten to a temporary file then renamed over, so a
  crash during a rewrite loses nothing. TensorBoard event files are
  append-only: the resumed run's file starts with a purge marker, by which
  TensorBoard discards the earlier files' events after the resumed step.
  """

  def __init__(self, workdir: str, tensorboard: bool = True):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb_dir = os.path.join(workdir, "tensorboard") if tensorboard else None
    self._tb = None  # made at the first event, after `resume` set the purge step
    self._purge_step = None
    self._file = None
    self._keep(lambda record: True)

  def resume(self, step: int) -> None:
    """This run continues after `step`: the events logged past it go."""
    self._keep(lambda record: record["step"] <= step)
    if self._tb is not None:  # a new event file, to carry the purge marker
      self._tb.close()
      self._tb = None
    # TensorBoard discards the events at steps >= the purge step.
    self._purge_step = int(step) + 1

  def _keep(self, wanted) -> None:
    """Keeps the records `wanted` accepts (and no torn line a kill left)."""
    records, clean = _read(self.path)
    kept = [r for r in records if wanted(r)]
    if len(kept) < len(records) or not clean:
      self._rewrite(kept)
    elif self._file is None:
      self._file = open(self.path, "a", encoding="utf-8")
    self._keys = {(r.get("split"), r.get("step")) for r in kept}
    self._last = {r.get("split"): _values(r) for r in kept if r.get("split") in RUN_SPLITS}

  def _rewrite(self, records: list) -> None:
    if self._file is not None:
      self._file.close()
    tmp = f"{self.path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      f.writelines(json.dumps(r) + "\n" for r in records)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, self.path)
    self._file = open(self.path, "a", encoding="utf-8")

  def _board(self):
    if self._tb is None and self._tb_dir is not None:
      from tensorboardX import SummaryWriter  # imported lazily: slow to import
      self._tb = SummaryWriter(self._tb_dir, purge_step=self._purge_step)
    return self._tb

  def write(self, step: int, split: str, values: dict) -> None:
    record = {"step": int(step), "split": split}
    record.update({k: _plain(v) for k, v in values.items()})
    if split in RUN_SPLITS and self._last.get(split) == _values(record):
      return
    key = (split, int(step))
    if key in self._keys:  # logged by an earlier run: this one replaces it
      records, _ = _read(self.path)
      self._rewrite([record if (r.get("split"), r.get("step")) == key else r for r in records])
    else:
      self._file.write(json.dumps(record) + "\n")
      self._file.flush()
      self._keys.add(key)
    if split in RUN_SPLITS:
      self._last[split] = _values(record)
    board = self._board()
    for k, v in values.items():
      if board is not None and isinstance(v, (int, float, np.number)) and not isinstance(v, bool):
        board.add_scalar(f"{split}/{k}", float(v), int(step))

  def image(self, step: int, tag: str, image: np.ndarray) -> None:
    """image: [height, width, 3] uint8."""
    board = self._board()
    if board is not None:
      board.add_image(tag, image, int(step), dataformats="HWC")

  def text(self, step: int, tag: str, text: str) -> None:
    board = self._board()
    if board is not None:
      board.add_text(tag, text, int(step))

  def close(self) -> None:
    """Closes the files. A failure here (a full disk) is a warning, not an
    error: metrics.jsonl was flushed at every write, and an exception that
    is already on its way (say, the checkpoint error for that full disk)
    must not be replaced by this one."""
    for close in (self._file.close, self._tb.close if self._tb is not None else None):
      if close is None:
        continue
      try:
        close()
      except OSError as e:
        logging.warning("closing the metric files of %s failed: %s", self.path, e)


class NullWriter:
  """A `MetricWriter` that writes nothing: processes other than 0 of a
  multi-process run."""

  def resume(self, step):
    pass

  def write(self, step, split, values):
    pass

  def image(self, step, tag, image):
    pass

  def text(self, step, tag, text):
    pass

  def close(self):
    pass


def _plain(value):
  if isinstance(value, (np.generic,)):
    return value.item()
  return value


def _values(record: dict) -> dict:
  """A record's values as they read back from the file (without the step)."""
  return json.loads(json.dumps({k: v for k, v in record.items() if k != "step"}))


def _read(path: str) -> tuple[list[dict], bool]:
  """(the records of `path`, whether every line was a whole one): a kill
  during a write can leave a torn last line, which is dropped."""
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  except FileNotFoundError:
    return [], True
  records, clean = [], not text or text.endswith("\n")
  for line in text.splitlines():
    try:
      record = json.loads(line)
    except ValueError:
      record = None
    if isinstance(record, dict):
      records.append(record)
    else:
      clean = False
  return records, clean


def read_metrics(workdir: str, split: Optional[str] = None) -> list[dict]:
  """The events of `workdir/metrics.jsonl`, optionally of one split."""
  path = os.path.join(workdir, "metrics.jsonl")
  with open(path, encoding="utf-8") as f:
    events = [json.loads(line) for line in f if line.strip()]
  return [e for e in events if split is None or e.get("split") == split]
