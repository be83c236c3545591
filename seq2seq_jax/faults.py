"""What the training loop does when something goes wrong mid-run.

* `StopSignals`: SIGTERM or SIGINT (Ctrl-C) asks the loop to finish the
  current step, write a checkpoint and exit 0; a second one kills the
  process at once (the default action is restored by the first).
* `check_finite`: at each log point, the steps whose update was skipped for a
  non-finite loss or gradient (`training.skip_nonfinite` did the skipping,
  inside the step) are reported with their step and training examples, and
  the run stops or carries on by `config.train.nonfinite`.
"""

import signal
import sys
import threading
from typing import Optional

from seq2seq_jax.errors import DivergenceError

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
  """Context manager: while inside, SIGTERM/SIGINT set `requested` (the
  signal's name) instead of killing the process.

  Python runs a handler between bytecodes, so a first signal during a long
  compiled step is seen when the step returns; the default actions are put
  back by it, so a second signal ends the process right away, even inside
  the step. Outside the main thread (signals cannot be caught there) it does
  nothing.
  """

  def __init__(self):
    self.requested: Optional[str] = None
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    self.requested = signal.Signals(signum).name
    for s in SIGNALS:
      signal.signal(s, signal.SIG_DFL)
    print(f"\n{self.requested}: stopping after this step with a checkpoint "
          "(send it again to stop at once, without one)", file=sys.stderr, flush=True)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for s in SIGNALS:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous = {}
    return False


def check_finite(fetched: list, first_step: int, mode: str, batch_at, last_checkpoint) -> int:
  """The number of skipped (non-finite) steps among `fetched`, the metrics of
  the steps first_step, first_step + 1, ... (0-based); each is reported.

  mode "stop" raises DivergenceError at the first one. batch_at(step) gives
  the step's batch again (the data order is a function of the step), for the
  indices of the examples it held; last_checkpoint() the newest saved step.
  """
  skipped = 0
  for i, m in enumerate(fetched):
    if not int(m.get("nonfinite_steps", 0)):
      continue
    skipped += 1
    step = first_step + i
    index = [int(j) for j in batch_at(step)["index"] if j >= 0]
    shown = ", ".join(map(str, index[:8])) + (", ..." if len(index) > 8 else "")
    what = (f"step {step + 1}: non-finite loss or gradients (loss {float(m['loss'])}, gradient "
            f"norm {float(m['grad_norm'])}) on the batch of training examples [{shown}]")
    if mode == "stop":
      raise DivergenceError(
          f"{what}; the update was not applied and training stopped "
          f"(config.train.nonfinite='stop'); the last checkpoint is step "
          f"{last_checkpoint()}; lower config.train.learning_rate, check those examples, "
          "or set config.train.nonfinite=skip")
    print(f"warning: {what}; update skipped", file=sys.stderr, flush=True)
  return skipped
