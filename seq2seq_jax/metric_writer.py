"""Where a run's numbers go: `metrics.jsonl` (one JSON object per event, with
`step` and `split`) and TensorBoard event files (tensorboardX, no TensorFlow).
"""

import json
import os
from typing import Optional

import numpy as np
from absl import logging


class MetricWriter:
  """Appends events to `workdir/metrics.jsonl` and `workdir/tensorboard/`."""

  def __init__(self, workdir: str, tensorboard: bool = True):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._file = open(self.path, "a", encoding="utf-8")
    self._tb = None
    if tensorboard:
      from tensorboardX import SummaryWriter  # imported lazily: slow to import
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, split: str, values: dict) -> None:
    record = {"step": int(step), "split": split}
    record.update({k: _plain(v) for k, v in values.items()})
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()
    if self._tb is not None:
      for k, v in values.items():
        if isinstance(v, (int, float, np.number)) and not isinstance(v, bool):
          self._tb.add_scalar(f"{split}/{k}", float(v), int(step))

  def image(self, step: int, tag: str, image: np.ndarray) -> None:
    """image: [height, width, 3] uint8."""
    if self._tb is not None:
      self._tb.add_image(tag, image, int(step), dataformats="HWC")

  def text(self, step: int, tag: str, text: str) -> None:
    if self._tb is not None:
      self._tb.add_text(tag, text, int(step))

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


def read_metrics(workdir: str, split: Optional[str] = None) -> list[dict]:
  """The events of `workdir/metrics.jsonl`, optionally of one split."""
  path = os.path.join(workdir, "metrics.jsonl")
  with open(path, encoding="utf-8") as f:
    events = [json.loads(line) for line in f if line.strip()]
  return [e for e in events if split is None or e.get("split") == split]
