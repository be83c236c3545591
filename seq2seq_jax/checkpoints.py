"""Orbax checkpoints of the train state, saved asynchronously.

A checkpoint holds the parameters, the optimizer state and the step, plus a
small JSON `meta` (the model fields it was trained with). Nothing else is
needed to resume exactly: the data order, dropout keys and learning rate are
all functions of the step.
"""

import os
from typing import Optional

import jax
import orbax.checkpoint as ocp

from seq2seq_jax.errors import CheckpointError


def _trainable(state) -> dict:
  return {"params": state.params, "opt_state": state.opt_state, "step": state.step}


class Checkpoints:
  """Keeps the newest `keep` checkpoints under `directory`."""

  def __init__(self, directory: str, keep: int = 3):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, state, meta: dict) -> None:
    """Starts writing `state` at its step; returns before the write ends."""
    step = int(jax.device_get(state.step))
    if step in self._manager.all_steps():
      return
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(_trainable(state)),
        meta=ocp.args.JsonSave(meta)))

  def read_meta(self, step: Optional[int] = None) -> dict:
    step = self.latest_step() if step is None else step
    restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored["meta"])

  def restore(self, state, step: Optional[int] = None):
    """Returns `state` with the saved parameters, optimizer state and step.

    `state` is the freshly initialized state; its structure, shapes and
    dtypes are the target, so a checkpoint from another model is refused.
    """
    step = self.latest_step() if step is None else step
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, _trainable(state))
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target)))
    except (ValueError, KeyError, TypeError) as e:
      raise CheckpointError(
          f"checkpoint {step} in {self.directory} does not fit this model "
          f"({str(e).splitlines()[0][:200]}); use another --workdir") from None
    saved = restored["state"]
    return state.replace(params=saved["params"], opt_state=saved["opt_state"],
                         step=saved["step"])

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def has_checkpoints(directory: str) -> bool:
  """True when `directory` holds at least one finished checkpoint (read
  without creating anything, so a bad run leaves the workdir as it was)."""
  if not os.path.isdir(directory):
    return False
  return any(name.isdigit() for name in os.listdir(directory))

