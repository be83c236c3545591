"""Orbax checkpoints of the train state, saved asynchronously.

A checkpoint holds the parameters, the optimizer state and the step (and
float16's loss scale; with train.ema_decay, `params` is the moving average
and the trained parameters are `raw_params`), plus a small JSON `meta` (the
model fields it was trained with). Nothing else is needed to resume exactly: the data order,
dropout keys and learning rate are all functions of the step.

Every process of a multi-process run calls `save` and `restore` (Orbax
coordinates them). The state is saved as whole (global) arrays and restored
onto the sharding of the state given to `restore`, so a checkpoint saved on
N devices resumes on M.

A checkpoint that does not restore is set aside (and its steps redone) only
on evidence that its files are damaged, and on several processes only when
every one of them found it so: an I/O error, a full disk, memory or an
interrupt says nothing about the files, so it stops the run and moves
nothing.
"""

import errno
import os
import re
import shutil
import sys
from typing import Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from seq2seq_jax.errors import CheckpointError
from seq2seq_jax.training import DynamicScaleState


def _trainable(state) -> dict:
  """What a checkpoint holds. `params` are always the parameters to use
  (`state.eval_params`): with train.ema_decay, the moving average, and the
  trained parameters go under `raw_params`. So inference, `restore_params`
  and keep_best read one name whatever the run did."""
  average = getattr(state, "ema_params", None)  # None also for Flax's own TrainState
  out = {"params": state.params if average is None else average,
         "opt_state": state.opt_state, "step": state.step}
  if average is not None:
    out["raw_params"] = state.params
  if isinstance(state, DynamicScaleState):  # float16: the loss scale resumes too
    out.update(loss_scale=state.loss_scale, good_steps=state.good_steps)
  return out


def _from_trainable(state, saved: dict):
  """`state` with the arrays of a checkpoint (`_trainable`'s layout)."""
  saved = dict(saved)
  if "raw_params" in saved:
    saved["ema_params"], saved["params"] = saved["params"], saved.pop("raw_params")
  return state.replace(**saved)


class Checkpoints:
  """Keeps the newest `keep` checkpoints under `directory`."""

  def __init__(self, directory: str, keep: int = 3):
    self.directory = os.path.abspath(directory)
    self._writing = None  # the step of the newest save started
    _remove_unfinished_writes(self.directory)
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, state, meta: dict) -> None:
    """Starts writing `state` at its step; returns before the write ends."""
    step = int(jax.device_get(state.step))
    if step in self._manager.all_steps():
      return
    self.wait()  # the previous write's failure, if any, is reported as that write's
    # A read-only or full directory fails here, at once and in this thread
    # (Orbax's background write could otherwise stall on it).
    probe = os.path.join(self.directory, f".write_probe.{jax.process_index()}.{os.getpid()}")
    try:
      with open(probe, "wb") as f:
        f.write(b"\0" * 4096)
        f.flush()
        os.fsync(f.fileno())
    except OSError as e:
      raise self._write_error(step, e) from None
    finally:
      try:  # a full disk can still unlink; an unwritable directory had no probe
        os.remove(probe)
      except OSError:
        pass
    self._writing = step
    try:
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(_trainable(state)),
          meta=ocp.args.JsonSave(meta)))
    except Exception as e:  # noqa: BLE001
      raise self._write_error(step, e) from None

  def _write_error(self, step, e) -> CheckpointError:
    on_disk = sorted(int(n) for n in os.listdir(self.directory) if n.isdigit())
    return CheckpointError(
        f"cannot write checkpoint {step} to {self.directory} ({_first_line(e)}); the earlier "
        f"checkpoints ({', '.join(map(str, on_disk)) or 'none'}) are intact: free space or "
        "make the directory writable, then run the same command again to resume")

  def read_meta(self, step: Optional[int] = None) -> dict:
    """The meta of `step`, else of the newest checkpoint whose meta reads;
    {} if none does (restore then decides)."""
    for s in [step] if step is not None else sorted(self.all_steps(), reverse=True):
      try:
        restored = self._manager.restore(s, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored["meta"])
      except Exception as e:  # noqa: BLE001  (a damaged checkpoint: try the one before)
        if step is not None or not is_damage(e):
          raise
    return {}

  def restore(self, state, step: Optional[int] = None):
    """Returns `state` with the saved parameters, optimizer state and step.

    `state` is the freshly initialized state; its structure, shapes and
    dtypes are the target, so a checkpoint from another model is refused.

    Without `step`: the newest checkpoint that restores. Newer ones whose
    files every process found damaged (truncated, missing or garbled: Orbax
    and TensorStore check them; see `is_damage`) are reported and moved to
    `<workdir>/corrupt_checkpoints/`, so the run redoes their steps and saves
    them anew. Any other failure (an I/O error, memory, processes that
    disagree) is raised and moves nothing. When none restores, that is an
    error: a workdir with checkpoints never silently starts from scratch.
    """
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, _trainable(state))
    steps = [step] if step is not None else sorted(self.all_steps(), reverse=True)
    failures = []  # (step, why) of those every process found damaged
    for s in steps:
      error = None
      try:
        restored = self._manager.restore(s, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target)))
      except Exception as e:  # noqa: BLE001  (damage shows as many exception types)
        error = e
      mine = RESTORED if error is None else DAMAGED if is_damage(error) else OTHER
      outcomes = _all_processes(mine)
      verdict = agreed(outcomes)
      if verdict == RESTORED:
        break
      if verdict == DAMAGED:
        failures.append((s, _first_line(error)))
        continue
      if mine == OTHER:
        raise error
      raise self._undecided(s, outcomes, error)
    else:
      tried = "; ".join(f"step {s}: {why}" for s, why in failures) or "none found"
      raise CheckpointError(
          f"no checkpoint in {self.directory} can be restored into this model ({tried}): its "
          "files are damaged or it holds another model; use another --workdir, or remove "
          "the damaged checkpoints to resume from older ones")
    if failures:
      self._set_aside(failures, s)
    return _from_trainable(state, restored["state"])

  def _undecided(self, step: int, outcomes, error) -> CheckpointError:
    """The error of a process whose restore of `step` ended as all did not."""
    by = lambda outcome: ", ".join(str(i) for i in np.flatnonzero(outcomes == outcome)) or "none"
    here = f"; here: {_first_line(error)}" if error is not None else ""
    return CheckpointError(
        f"checkpoint {step} in {self.directory}: processes {by(RESTORED)} restored it, "
        f"{by(DAMAGED)} found it damaged, {by(OTHER)} failed for another reason (see their "
        f"logs){here}; nothing was moved: run the same command again, and if this persists "
        "check that every process sees the same files")

  def _set_aside(self, failures: list, restored: int) -> None:
    """Moves `failures` (damaged on every process) aside: process 0 moves,
    all wait for it, then all see the same steps."""
    aside = os.path.join(os.path.dirname(self.directory), "corrupt_checkpoints")
    for s, why in failures:
      dest = os.path.join(aside, str(s))
      if jax.process_index() == 0:
        n = 1
        while os.path.exists(dest):
          dest, n = os.path.join(aside, f"{s}.{n}"), n + 1
        os.makedirs(aside, exist_ok=True)
        os.rename(os.path.join(self.directory, str(s)), dest)
      print(f"warning: checkpoint {s} in {self.directory} cannot be read ({why}); moved to "
            f"{dest}; resuming from checkpoint {restored}", file=sys.stderr, flush=True)
    _barrier("seq2seq_jax: damaged checkpoints set aside")
    self._manager.reload()

  def wait(self) -> None:
    """Waits for the pending write; a failed one raises CheckpointError."""
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001
      raise self._write_error(self._writing, e) from None

  def close(self) -> None:
    try:
      self.wait()
    finally:
      self._manager.close()


# One process's outcome of restoring a checkpoint, as the processes exchange it.
RESTORED, DAMAGED, OTHER = 0, 1, 2

# TensorStore status codes of a failure of the moment, not of the files.
_PASSING_STATUSES = ("ABORTED", "CANCELLED", "DEADLINE_EXCEEDED", "PERMISSION_DENIED",
                     "RESOURCE_EXHAUSTED", "UNAUTHENTICATED", "UNAVAILABLE")
# OS errors that do describe the files: missing, or found corrupt by the file system.
_DAMAGE_ERRNOS = {errno.ENOENT, errno.ENOTDIR, errno.EBADMSG, getattr(errno, "EUCLEAN", 117)}


def restore_params(directory: str, params_shapes, step: Optional[int] = None) -> tuple:
  """(params, step): the parameters alone of checkpoint `step` (default the
  newest), restored into `params_shapes` (a tree of `jax.ShapeDtypeStruct`,
  with shardings) for inference. Read-only: nothing in `directory` is
  created, cleaned up or moved. A missing step or parameters that do not fit
  the shapes is one CheckpointError."""
  directory = os.path.abspath(directory)
  options = ocp.CheckpointManagerOptions(create=False)  # and no cleanup_tmp_directories
  with ocp.CheckpointManager(directory, options=options) as manager:
    step = manager.latest_step() if step is None else step
    if step not in manager.all_steps():
      raise CheckpointError(f"{directory} has no checkpoint {step} "
                            f"(it has {list(manager.all_steps())})")
    abstract = {"params": params_shapes}
    try:
      restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
          item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
          partial_restore=True)))
    except (ValueError, KeyError, TypeError) as e:
      raise CheckpointError(f"checkpoint {step} in {directory} does not fit the model "
                            f"({_first_line(e)[:200]})") from None
  return restored["state"]["params"], step


def is_damage(e: BaseException) -> bool:
  """Whether a failed restore is evidence that the checkpoint's files are
  damaged (missing, truncated, garbled), not a failure of the moment that
  says nothing about them: an OS error such as EIO, a full or unreachable
  disk, a permission, memory, an interrupt.

  Orbax wraps TensorStore's errors (a ValueError "CODE: ... [OS error: ...]")
  in its own, so the whole chain of causes is read; one link of the second
  kind decides.
  """
  if not isinstance(e, Exception):  # KeyboardInterrupt, SystemExit
    return False
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, MemoryError):
      return False
    if isinstance(e, OSError) and not isinstance(e, (FileNotFoundError, NotADirectoryError)) \
        and e.errno not in _DAMAGE_ERRNOS:
      return False
    status = re.match(r"([A-Z_]+): ", str(e))
    status = status and status.group(1)
    if status in _PASSING_STATUSES or ("[OS error" in str(e) and status != "NOT_FOUND"):
      return False
    e = e.__cause__ or e.__context__
  return True


def agreed(outcomes) -> int:
  """What every process does about one checkpoint, given each one's outcome:
  RESTORED when all restored it, DAMAGED (set it aside, try the one before)
  only when all found it damaged, else OTHER (stop, moving nothing)."""
  outcomes = set(np.asarray(outcomes).ravel().tolist())
  return outcomes.pop() if outcomes in ({RESTORED}, {DAMAGED}) else OTHER


def _all_processes(outcome: int) -> np.ndarray:
  """Every process's `outcome` of the same restore, in process order."""
  if jax.process_count() == 1:
    return np.array([outcome])
  return np.asarray(multihost_utils.process_allgather(np.int32(outcome))).ravel()


def _remove_unfinished_writes(directory: str) -> None:
  """A write cut short (kill -9 during an async save) leaves only a temporary
  directory, never a step: removed here, before this run writes anything.
  Orbax's own `cleanup_tmp_directories` removes them in a background thread,
  which can still be deleting `8.orbax-checkpoint-tmp` when this run starts
  writing step 8 under the same name (seen as a FileNotFoundError that ended
  a resumed run)."""
  if jax.process_index() == 0 and os.path.isdir(directory):
    for name in os.listdir(directory):
      if ".orbax-checkpoint-tmp" in name:
        path = os.path.join(directory, name)
        if os.path.isdir(path):
          shutil.rmtree(path)
        else:
          os.remove(path)
  _barrier("seq2seq_jax: unfinished checkpoint writes removed")


def _barrier(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def _first_line(e: Exception) -> str:
  lines = [line.strip() for line in str(e).splitlines() if line.strip()]
  return (f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__)[:200]


def has_checkpoints(directory: str) -> bool:
  """True when `directory` holds at least one finished checkpoint (read
  without creating anything, so a bad run leaves the workdir as it was)."""
  if not os.path.isdir(directory):
    return False
  return any(name.isdigit() for name in os.listdir(directory))

