"""Data parallelism over every device of every process.

A `Mesh` of all devices has a `data` axis (and a `model` axis of size 1,
room for model parallelism). The global batch of `train.batch_size` examples
is split along `data`; the parameters and optimizer state are replicated.
Two strategies step the same train step (`training.train_step`):

  jit   one program over global arrays (`NamedSharding`); XLA partitions it
        and inserts the all-reduce of the gradients itself;
  pmap  the classic per-device program on the process's devices, the
        gradients and metric sums `psum`med over the `data` axis.

The loss is normalized by the token count of the whole global batch (see
`train_step`), so for a given global batch every device count, strategy and
gradient-accumulation setting computes the same step, up to float rounding.

Several processes (hosts): `initialize` calls `jax.distributed.initialize`
before JAX is used. Every process builds the same global batch (the batchers
are functions of seed and step) and hands over only its own rows
(`process_rows`), which make one global array; no row goes to two devices and
none is left out.
"""

import os
from typing import Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from seq2seq_jax import compile_ahead, training
from seq2seq_jax.data.batching import MODEL_KEYS, fill_batch
from seq2seq_jax.errors import ConfigError

STRATEGIES = ("jit", "pmap")
DATA, MODEL = "data", "model"


def initialize(cfg) -> None:
  """`jax.distributed.initialize` when the config (or the environment)
  describes several processes; nothing for a single process.

  cfg: config.parallel. Unset fields fall back to JAX_COORDINATOR_ADDRESS,
  JAX_NUM_PROCESSES and JAX_PROCESS_ID, and on clusters JAX detects itself
  (SLURM, Open MPI, Kubernetes, Cloud TPU) to that detection.
  """
  address = cfg.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
  num = cfg.num_processes
  if num == 1 and not cfg.coordinator_address:
    num = int(os.environ.get("JAX_NUM_PROCESSES", "1"))
  if num == 1 or jax.distributed.is_initialized():
    return
  pid = cfg.process_id if cfg.process_id >= 0 else os.environ.get("JAX_PROCESS_ID")
  try:
    jax.distributed.initialize(address or None, num or None,
                               None if pid is None else int(pid))
  except (ValueError, RuntimeError) as e:
    raise ConfigError(
        f"cannot start the {num or 'auto-detected number of'} processes "
        f"(config.parallel.coordinator_address={address!r}, num_processes={num}, "
        f"process_id={pid}): {str(e).strip().splitlines()[0][:200]}") from None


def is_main_process() -> bool:
  """Process 0 writes logs, metrics, TensorBoard events, plots and samples."""
  return jax.process_index() == 0


def make_mesh(devices=None) -> Mesh:
  """[data, model=1] mesh; devices process by process, so each process's
  devices hold a contiguous block of the global batch."""
  devices = sorted(devices or jax.devices(), key=lambda d: (d.process_index, d.id))
  return Mesh(np.array(devices).reshape(-1, 1), (DATA, MODEL))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA))


def process_rows(mesh: Mesh, batch_size: int) -> slice:
  """The rows of a global batch that this process's devices hold."""
  index_map = batch_sharding(mesh).addressable_devices_indices_map((batch_size,))
  starts = sorted(idx[0].start or 0 for idx in index_map.values())
  stops = sorted(batch_size if idx[0].stop is None else idx[0].stop
                 for idx in index_map.values())
  rows = slice(starts[0], stops[-1])
  assert (rows.stop - rows.start) * jax.process_count() == batch_size, (rows, batch_size)
  return rows


class DataParallel:
  """The train step of one run on a mesh, and the moves of its state.

  The *host layout* of a train state is the one checkpoints and evaluation
  see: global arrays replicated over the mesh. `jit` trains in it; `pmap`
  trains on a copy per local device ([local devices, ...]).
  """

  def __init__(self, strategy: str = "jit", mesh: Optional[Mesh] = None):
    if strategy not in STRATEGIES:
      raise ConfigError(f"config.parallel.strategy must be one of {', '.join(STRATEGIES)}; "
                        f"got {strategy!r}")
    self.strategy = strategy
    self.mesh = mesh or make_mesh()
    self.num_shards = self.mesh.shape[DATA]
    self._step = None

  def check_batch_size(self, batch_size: int, grad_accum_steps: int) -> None:
    per = self.num_shards * grad_accum_steps
    if batch_size % per:
      raise ConfigError(
          f"config.train.batch_size ({batch_size}) must be divisible by the number of devices "
          f"({self.num_shards}) x config.train.grad_accum_steps ({grad_accum_steps}) = {per}")

  # --- state -----------------------------------------------------------

  def init_state(self, model, cfg, rng, batch: dict):
    """A fresh train state in the host layout."""
    return training.create_train_state(model, cfg, rng, batch, sharding=replicated(self.mesh))

  def initializer(self, model, cfg):
    """`training.run_initializer` with its outputs in the host layout:
    init(seed, src, src_len, tgt_in) -> (state, dropout key), jitted."""
    return training.run_initializer(model, cfg, sharding=replicated(self.mesh))

  def to_device(self, state):
    """Host layout -> training layout."""
    if self.strategy == "jit":
      return state
    devices = jax.local_devices()  # pmap's order
    sharding = NamedSharding(Mesh(np.array(devices), ("local",)), P("local"))

    def stack(x):
      local = x.addressable_data(0)
      return jax.device_put(jax.numpy.broadcast_to(local, (len(devices),) + local.shape),
                            sharding)

    return jax.tree.map(stack, state)

  def to_host(self, state):
    """Training layout -> host layout (for checkpoints and evaluation)."""
    if self.strategy == "jit":
      return state
    sharding = replicated(self.mesh)

    def unstack(x):
      shards = [s.data.reshape(x.shape[1:]) for s in x.addressable_shards]
      return jax.make_array_from_single_device_arrays(x.shape[1:], sharding, shards)

    return jax.tree.map(unstack, state)

  def eval_params(self, state):
    """The training-layout state's parameters to evaluate (`eval_params`: the
    moving average with train.ema_decay) on this process's first device."""
    if self.strategy == "pmap":
      return jax.tree.map(lambda x: x[0], state.eval_params)
    return self.local_params(state)

  @staticmethod
  def eval_params_shape(params):
    """The shapes (`jax.ShapeDtypeStruct`, with sharding) of what
    `eval_params` and `local_params` return: parameters on this process's
    first device, for compiling ahead and for restoring for inference."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype, sharding=device), params)

  @staticmethod
  def local_params(state):
    """The host-layout state's parameters to evaluate (`eval_params`) on
    this process's first device: evaluation and decoding run there, with no
    collectives."""
    return jax.tree.map(lambda x: x.addressable_data(0), state.eval_params)

  def describe(self) -> str:
    """"" on one device; else the devices, processes and strategy."""
    if self.num_shards == 1 and jax.process_count() == 1:
      return ""
    return (f"; data parallel ({self.strategy}) over {self.num_shards} devices"
            + (f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""))

  # --- batches ---------------------------------------------------------

  def put_batch(self, batch: dict) -> dict:
    """This process's rows of a global batch (`process_rows`; on one process
    the whole batch, which is what `pipeline.Batches` gives each process)
    -> what the step takes: global arrays sharded over `data` (jit), or the
    rows as [local devices, rows per device, ...] (pmap)."""
    local = {k: np.asarray(v) for k, v in batch.items()}
    if self.strategy == "pmap":
      n = jax.local_device_count()
      return {k: v.reshape((n, -1) + v.shape[1:]) for k, v in local.items()}
    sharding = self._batch_arg_sharding()
    if sharding is None:
      return local
    size = len(next(iter(local.values()))) * jax.process_count()
    return {k: jax.make_array_from_process_local_data(sharding, v, (size,) + v.shape[1:])
            for k, v in local.items()}

  def _batch_arg_sharding(self) -> Optional[NamedSharding]:
    """The sharding of the batch arrays `put_batch` gives a jit step: None
    (NumPy arrays) on one process, where the step's C++ dispatch places them
    by its in_shardings, about 0.15 ms a step against 1 ms for building six
    global arrays in Python (a quarter of the default model's step); global
    arrays over the mesh on several. The programs compiled ahead use the
    same, since the step's executable cache is keyed on it."""
    return batch_sharding(self.mesh) if jax.process_count() > 1 else None

  # --- the step --------------------------------------------------------

  def train_step(self, label_smoothing: float = 0.0, scheduled_sampling: bool = False,
                 sample_predictions: bool = False, grad_accum_steps: int = 1,
                 precision: str = "float32", train_cfg=None):
    """step(state, batch, dropout_rng, gold_prob) -> (state, metrics): the
    state in the training layout (donated), the batch from `put_batch`,
    metrics the global sums (one value each, not one per device).

    train_cfg: config.train, whose optimizer the step applies, with the
      schedule's numbers (`training.schedule_values`) passed to the program
      at each call rather than compiled in, and whose learning rate the
      metrics report; None: the state's own optimizer.

    `step.compile_ahead(ahead, state, batch_shapes, dropout_rng, gold_prob)`
    starts compiling the program of every batch shape (S, T) in `ahead`'s
    worker threads (`compile_ahead.Ahead`); a step then waits for its
    shape's program instead of compiling it. (jit only: pmap compiles at
    each shape's first step.)"""
    args = (label_smoothing, scheduled_sampling, sample_predictions, grad_accum_steps, precision)
    schedule = None if train_cfg is None else training.schedule_values(train_cfg)
    if self.strategy == "jit":
      fn = training.step_function(*args, train_cfg=train_cfg)
      rep = replicated(self.mesh)
      compiled = jax.jit(fn, in_shardings=(rep, batch_sharding(self.mesh), rep, rep, rep),
                         out_shardings=(rep, rep), donate_argnums=(0,))
    else:
      fn = training.step_function(*args, axis_name=DATA, train_cfg=train_cfg)
      # Metrics are psummed, the same on every device: out_axes=None returns one.
      compiled = jax.pmap(fn, axis_name=DATA, in_axes=(0, 0, None, None, None),
                          out_axes=(0, None), donate_argnums=(0,))

    shapes = set()  # pmap keeps no public cache count: one compile per batch shape
    ahead_of = [None]  # the compile_ahead.Ahead compiling this step's programs

    def step(state, batch, dropout_rng, gold_prob=None):
      key = compile_ahead.shape_key(batch)
      shapes.add(key)
      if ahead_of[0] is not None:
        ahead_of[0].wait(("train_step", key))
      return compiled(state, batch, dropout_rng, gold_prob, schedule)

    def compile_ahead_(ahead, state, batch_shapes, batch_size, dropout_rng, gold_prob=None):
      if self.strategy != "jit":
        return
      ahead_of[0] = ahead
      sharding = self._batch_arg_sharding()  # as the real arguments have
      for shape in batch_shapes:
        batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding)
                 for k, v in fill_batch(shape, batch_size, ()).items() if k in MODEL_KEYS}
        ahead.submit(("train_step", compile_ahead.shape_key(batch)), compiled, state, batch,
                     dropout_rng, gold_prob, schedule)

    step.compile_ahead = compile_ahead_
    step.cache_size = compiled._cache_size if self.strategy == "jit" else lambda: len(shapes)
    # Programs compiled (or loaded) for this step since it was built: jit's
    # compile events by name (its executable cache can evict an entry); pmap
    # names its programs after no function, so its shapes are counted.
    compiles_before = compile_ahead.compilations("jit(train_step)")
    step.compilations = ((lambda: compile_ahead.compilations("jit(train_step)") - compiles_before)
                         if self.strategy == "jit" else lambda: len(shapes))
    self._step = compiled
    return step
