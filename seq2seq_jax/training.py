"""Train state, loss, optimizer, schedules and the jit-compiled steps.

A batch is the dict made by `data.batching` (`src`, `src_len`, `tgt_in`,
`tgt_out`, `weights`, ...). Step metrics are *sums* (`loss_sum`,
`weight_sum`, `correct_sum`), so any number of batches (or devices) combine by
adding before dividing once.
"""

import functools
import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from flax.training import train_state

from seq2seq_jax.models.ensemble import clip_each_member, member_names

Array = jax.Array


def ema_decay_at(decay, step):
  """The decay of the parameters' moving average at update `step` (0 for
  the first): min(decay, (1 + step) / (10 + step)). The ramp lets the
  average forget the random initialization within the first few hundred
  updates whatever the decay (TensorFlow's `num_updates` rule)."""
  step = jnp.asarray(step).astype(jnp.float32)
  return jnp.minimum(jnp.float32(decay), (1.0 + step) / (10.0 + step))


class TrainState(train_state.TrainState):
  """Flax's train state, plus an exponential moving average of the
  parameters (Polyak averaging) when `ema_decay` > 0 (config.train.ema_decay):

    ema <- d * ema + (1 - d) * params, after each update, d = `ema_decay_at`.

  `params` are what the optimizer updates; `ema_params` (None without the
  average) are what evaluation, checkpoints' `params`, translate and
  evaluate use. The decay is compiled into the step; a checkpoint does not
  hold it, so a run may resume with another.
  """
  ema_params: Any = None
  ema_decay: float = struct.field(pytree_node=False, default=0.0)

  def apply_gradients(self, *, grads, **kwargs):
    new = super().apply_gradients(grads=grads, **kwargs)
    if self.ema_params is None:
      return new
    d = ema_decay_at(self.ema_decay, self.step)
    return new.replace(ema_params=jax.tree.map(
        lambda e, p: e + (1.0 - d) * (p - e), self.ema_params, new.params))

  @property
  def eval_params(self):
    """The parameters to evaluate, decode and export: the moving average
    when there is one, else the trained parameters."""
    return self.params if self.ema_params is None else self.ema_params


def schedule_values(cfg) -> np.ndarray:
  """The learning-rate schedule's numbers as one float32 array. The train
  step takes them as an argument, not as constants compiled into it, so runs
  that differ only in their schedule share one compiled program (and its
  persistent-cache entry). Derived numbers are computed here in float64 and
  rounded once, as Python floats are when optax's schedules trace them, so
  the rates are optax's (bit for bit in isolation; fused into a step, the
  compiler may round a last bit differently)."""
  peak, warmup, factor = float(cfg.learning_rate), int(cfg.warmup_steps), float(cfg.end_lr_factor)
  end, steps = peak * factor, max(cfg.num_steps - warmup, 1)
  # optax's schedules divide by these two as compiled-in constants, which XLA
  # turns into products with their float32 reciprocals; ours, whose divisors
  # are arguments, multiplies by the same reciprocals.
  reciprocals = np.float32(1) / np.array([steps, max(warmup, 1)], np.float32)
  return np.concatenate([np.array([peak, warmup, steps, factor, 1.0 - factor, end, peak - end,
                                   max(warmup, 1)], np.float32), reciprocals])


def learning_rate_schedule(cfg, values=None) -> optax.Schedule:
  """Linear warmup from 0 to the peak, then `cfg.decay` over the T = max(total
  - warmup, 1) steps after it (t of them done):
    cosine: peak * ((1 - f) * 0.5 (1 + cos(pi t / T)) + f), end factor f;
    linear: from the peak to f * peak;
    rsqrt: peak * sqrt(w / (t + w)), w = max(warmup, 1) (Vaswani et al. 2017);
    constant: the peak.
  These are optax's `linear_schedule`, `cosine_decay_schedule` and
  `join_schedules`, written over `values` (`schedule_values(cfg)` unless
  given; inside the train step, a traced argument) in the same operations,
  so the rates are the same floats. Only the decay's kind comes from `cfg`."""
  if values is None:
    values = schedule_values(cfg)
  (peak, warmup, steps, factor, one_minus_factor, end, peak_minus_end, start, per_step,
   per_warmup_step) = (values[i] for i in range(10))

  def decay(t):  # t: steps after warmup, as a float
    if cfg.decay == "cosine":
      cosine = 0.5 * (1 + jnp.cos(jnp.pi * jnp.minimum(t, steps) * per_step))
      return peak * (one_minus_factor * cosine**1.0 + factor)
    if cfg.decay == "linear":
      frac = 1 - jnp.clip(t, 0, steps) * per_step
      return peak_minus_end * frac**1 + end
    if cfg.decay == "rsqrt":
      return peak * jnp.sqrt(start / (t + start))
    return peak

  def schedule(count):  # jnp inside only: built on the host, it compiles nothing
    count = jnp.asarray(count).astype(jnp.float32)  # exact below 2**24 steps
    warming = (0.0 - peak) * (1 - jnp.clip(count, 0, warmup) * per_warmup_step)**1 + peak
    return jnp.where(count < warmup, warming, decay(count - warmup))

  return schedule


SCHEDULED_SAMPLING = ("none", "constant", "linear", "exponential", "inverse_sigmoid")


def gold_probability(ss, step: int) -> float:
  """eps_i of scheduled sampling (Bengio et al. 2015): the probability of
  feeding the gold previous token at training step i.

  constant: k;  linear: max(eps_min, k - c*i);  exponential: k^i (k < 1);
  inverse_sigmoid: k / (k + exp(i / k)) (k >= 1);  none: 1 (teacher forcing).
  """
  i = float(step)
  if ss.schedule == "constant":
    return float(ss.k)
  if ss.schedule == "linear":
    return max(ss.eps_min, ss.k - ss.c * i)
  if ss.schedule == "exponential":
    return max(ss.eps_min, ss.k ** i)
  if ss.schedule == "inverse_sigmoid":
    return max(ss.eps_min, ss.k / (ss.k + math.exp(min(i / ss.k, 700.0))))
  return 1.0


def make_optimizer(cfg, values=None) -> optax.GradientTransformation:
  """Adam or AdamW on the schedule (`learning_rate_schedule(cfg, values)`),
  after global-norm clipping (`clip_each_member`), run on the parameters
  raveled into one vector per model (`on_flat_vectors`)."""
  schedule = learning_rate_schedule(cfg, values)
  if cfg.optimizer == "adamw":
    opt = optax.adamw(schedule, weight_decay=cfg.weight_decay)
  else:
    opt = optax.adam(schedule)
  if cfg.grad_clip_norm > 0:
    opt = optax.chain(clip_each_member(cfg.grad_clip_norm), opt)
  return on_flat_vectors(opt)


# The layout of a checkpoint's optimizer state, recorded in its meta: "flat"
# is `on_flat_vectors`'s. Checkpoints without it hold one moment per
# parameter and cannot resume (their parameters still load).
OPTIMIZER_STATE = "flat"


def on_flat_vectors(inner: optax.GradientTransformation) -> optax.GradientTransformation:
  """`inner`, an elementwise optimizer with global-norm clipping, applied to
  the parameters raveled into one float32 vector (an ensemble's: one vector
  per member, so `clip_each_member` still clips each member on its own).

  The arithmetic is the same as on the tree, element for element; only the
  global norm sums in another order. What changes is the program: Adam's
  moments are one array each instead of one per parameter, so the update
  is a handful of fused loops instead of a few per parameter. On a CPU,
  where each compiled op costs microseconds to launch, this takes about a
  quarter off the train step's compile time and the per-parameter launches
  out of every step.
  """
  def groups(tree):
    names = member_names(tree)
    return {"": tree} if names is None else {k: tree[k] for k in names}

  def ravel(tree):
    return {k: jax.flatten_util.ravel_pytree(v)[0] for k, v in groups(tree).items()}

  def init(params):
    return inner.init(ravel(params))

  def update(updates, state, params=None):
    parts = {k: jax.flatten_util.ravel_pytree(v) for k, v in groups(updates).items()}
    flat, state = inner.update({k: v for k, (v, _) in parts.items()}, state,
                               None if params is None else ravel(params))
    tree = {k: unravel(flat[k]) for k, (_, unravel) in parts.items()}
    return (tree[""] if "" in tree else tree), state

  return optax.GradientTransformation(init, update)


class DynamicScaleState(TrainState):
  """A train state with dynamic loss scaling, for float16 compute
  (Micikevicius et al. 2018): the loss is multiplied by `loss_scale` so small
  gradients survive float16, and the gradients divided by it again. A step
  whose gradients are not finite changes no parameter (the step counter still
  advances, so the data order stays a function of the step) and halves the
  scale; GROWTH_INTERVAL finite steps in a row double it.
  """
  loss_scale: Array = None
  good_steps: Array = None

  GROWTH_INTERVAL = 2000

  def apply_scaled_gradients(self, grads):
    finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
    safe = jax.tree.map(lambda g: jnp.where(finite, g, jnp.zeros_like(g)), grads)
    new = self.apply_gradients(grads=safe)
    keep = lambda a, b: jax.tree.map(lambda x, y: jnp.where(finite, x, y), a, b)
    good = jnp.where(finite, self.good_steps + 1, 0)
    grow = good >= self.GROWTH_INTERVAL
    scale = jnp.where(finite, jnp.where(grow, self.loss_scale * 2, self.loss_scale),
                      jnp.maximum(self.loss_scale / 2, 1.0))
    return new.replace(params=keep(new.params, self.params),
                       opt_state=keep(new.opt_state, self.opt_state),
                       ema_params=keep(new.ema_params, self.ema_params),
                       loss_scale=scale, good_steps=jnp.where(grow, 0, good))


def _initializer(model: nn.Module, cfg, sharding, from_seed: bool):
  """The jit-compiled start of a run (see `create_train_state`)."""
  tx = make_optimizer(cfg)
  float16 = cfg.get("precision", "float32") == "float16"
  ema_decay = float(cfg.get("ema_decay", 0.0))

  def fresh_state(rng, src, src_len, tgt_in):
    params_rng, dropout_rng = jax.random.split(rng)
    params = model.init({"params": params_rng, "dropout": dropout_rng},
                        src, src_len, tgt_in, train=False)["params"]
    extra = {}
    if ema_decay > 0:  # the average starts at the initial parameters
      extra = dict(ema_params=jax.tree.map(jnp.copy, params), ema_decay=ema_decay)
    if float16:
      state = DynamicScaleState.create(
          apply_fn=model.apply, params=params, tx=tx,
          loss_scale=jnp.asarray(2.0 ** 15, jnp.float32), good_steps=jnp.zeros((), jnp.int32),
          **extra)
    else:
      state = TrainState.create(apply_fn=model.apply, params=params, tx=tx, **extra)
    # An int32 array from the start (not Python's 0), so the first step and
    # all later ones share one compiled train step per batch shape.
    return state.replace(step=jnp.zeros((), jnp.int32))

  def from_seed_fn(seed, src, src_len, tgt_in):
    init_rng, dropout_rng = jax.random.split(jax.random.key(seed))
    return fresh_state(init_rng, src, src_len, tgt_in), dropout_rng

  # One compilation for all of it, instead of one per parameter shape (and,
  # from a seed, none for making and splitting the keys). The program runs
  # once, so LLVM's optimizations are skipped: they would cost more than the
  # run (one truncated-normal draw per weight matrix; 2.4 -> 1.3 s for the
  # tests' tiny model). Values may differ from an optimized build's in the
  # last bits (rounding only: 7e-7 at most on the tiny model).
  return jax.jit(from_seed_fn if from_seed else fresh_state, out_shardings=sharding,
                 compiler_options={"xla_backend_optimization_level": 0})


def create_train_state(model: nn.Module, cfg, rng: Array, batch: dict, sharding=None) -> TrainState:
  """Initializes parameters from one batch's shapes (values do not matter).

  sharding: where the state's arrays go (a `jax.sharding.Sharding` for all,
    say replicated over a device mesh); None = the default device.
  cfg.precision "float16" gives a `DynamicScaleState`; parameters and
  optimizer state are float32 in every precision.
  """
  init = _initializer(model, cfg, sharding, from_seed=False)
  return init(rng, batch["src"], batch["src_len"], batch["tgt_in"])


def run_initializer(model: nn.Module, cfg, sharding=None):
  """A run's whole start as one program:
  init(seed int32 [], src, src_len, tgt_in) -> (train state, dropout key),
  the state of `create_train_state(model, cfg, key_a, batch)` and the
  dropout key `key_b`, where key_a, key_b = split(jax.random.key(seed))."""
  return _initializer(model, cfg, sharding, from_seed=True)


def token_losses(logits: Array, targets: Array) -> Array:
  """Per-token cross-entropy: logits [batch, time, vocab], targets [batch, time]."""
  return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)


def smoothed_token_losses(logits: Array, targets: Array, smoothing: float) -> Array:
  """Cross-entropy against (1 - smoothing) * one_hot + smoothing / vocab."""
  if smoothing == 0.0:
    return token_losses(logits, targets)
  soft = optax.smooth_labels(jax.nn.one_hot(targets, logits.shape[-1]), smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), soft)


def masked_cross_entropy(logits: Array, targets: Array, weights: Array,
                         label_smoothing: float = 0.0, divisor: Optional[Array] = None):
  """The loss a train step minimizes, and the metric sums it reports.

  Returns (loss, sums):
    loss: the (label-smoothed) cross-entropy summed over the real target
      tokens, divided by `divisor`. A train step passes the token count of
      the whole global batch, so that the parts of a batch (micro-batches,
      devices' shards) add up to the whole batch's loss and gradient; by
      default it is this batch's own count, which makes the loss a mean.
    sums: `loss_sum` (the plain negative log-likelihood whatever the
      smoothing, so perplexities compare across settings), `weight_sum` and
      `correct_sum`: sums, so any number of batches combine by adding.
  Padding and filler rows (weight 0) contribute nothing: not to the loss, the
  sums or the gradient.
  """
  logits = logits.astype(jnp.float32)
  weight_sum = jnp.sum(weights)
  if divisor is None:
    divisor = jnp.maximum(weight_sum, 1.0)
  loss = jnp.sum(smoothed_token_losses(logits, targets, label_smoothing) * weights) / divisor
  sums = {
      "loss_sum": jnp.sum(token_losses(logits, targets) * weights),
      "weight_sum": weight_sum,
      "correct_sum": jnp.sum((jnp.argmax(logits, -1) == targets) * weights),
  }
  return loss, sums


PRECISIONS = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def cast_floats(tree, dtype):
  """The tree with every floating array cast to `dtype` (integers untouched)."""
  return jax.tree.map(
      lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def micro_batches(batch: dict, k: int) -> dict:
  """[B, ...] -> [k, B/k, ...]: micro-batch i holds rows i, i+k, i+2k, ...

  Strided rather than contiguous so that each device's contiguous block of
  the global batch holds its own share of every micro-batch: splitting moves
  no data between devices, and the micro-batches are the same rows whatever
  the number of devices.
  """
  def split(x):
    return jnp.swapaxes(x.reshape((x.shape[0] // k, k) + x.shape[1:]), 0, 1)
  return jax.tree.map(split, batch)


def train_step(state: TrainState, batch: dict, dropout_rng: Array, label_smoothing: float = 0.0,
               gold_prob: Any = None, sample_predictions: bool = False, *,
               grad_accum_steps: int = 1, precision: str = "float32",
               axis_name: Optional[str] = None, tx: Optional[optax.GradientTransformation] = None,
               learning_rate_fn=None):
  """One optimizer step -> (new state, metric sums).

  Dropout's key is `fold_in(dropout_rng, step)`, a function of the step alone,
  so a resumed run draws exactly the masks an uninterrupted run would. The
  objective may be label-smoothed; the metric sums are always the plain
  negative log-likelihood, so perplexities compare across settings.

  The objective is the loss summed over the batch's real target tokens,
  divided by their count in the whole (global) batch. Each part of the batch
  (a micro-batch, a device's shard) therefore contributes its loss sum over
  the same divisor, and adding the parts' gradients gives exactly the
  gradient of the whole batch:
    grad_accum_steps: the batch is split into this many micro-batches
      (`micro_batches`), run one after another in a `lax.scan` with their
      gradients summed, so peak memory is that of one micro-batch.
    axis_name: inside `jax.pmap` over that axis, `batch` is this device's
      shard; gradients, loss and metric sums are `psum`med over devices.
    precision: "bfloat16" / "float16" run the model on parameters cast to
      that dtype; the parameters, gradients, optimizer state and loss stay
      float32. "float16" also scales the loss (`DynamicScaleState`).
    tx: the optimizer to apply, in place of `state.tx` (the one the state
      was created with; the same transformation, so the same `opt_state`
      layout, but with its schedule's numbers traced: `step_function`).
    learning_rate_fn: the optimizer's schedule; when given, the metrics
      report the step's rate as `learning_rate` (so reporting it costs no
      program of its own).
  """
  rng = jax.random.fold_in(dropout_rng, state.step)
  if axis_name is not None:  # each device its own masks
    rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
  kwargs = {}
  if gold_prob is not None:  # scheduled sampling; gold_prob is a traced scalar
    kwargs = {"gold_prob": gold_prob, "sample_predictions": sample_predictions}
  total_weight = jnp.sum(batch["weights"])
  if axis_name is not None:
    total_weight = jax.lax.psum(total_weight, axis_name)
  divisor = jnp.maximum(total_weight, 1.0)
  compute_dtype = PRECISIONS[precision]
  scale = getattr(state, "loss_scale", None)

  def loss_fn(params, micro, rng):
    if compute_dtype != jnp.float32:
      params = cast_floats(params, compute_dtype)
    # tgt_len: recurrent models skip each row's padded steps (the loss
    # gives them weight 0).
    logits, aux = state.apply_fn(
        {"params": params}, micro["src"], micro["src_len"], micro["tgt_in"], train=True,
        rngs={"dropout": rng, "sampling": jax.random.fold_in(rng, 1)},
        tgt_len=micro.get("tgt_len"), **kwargs)
    # An ensemble (models/ensemble.py) returns each member's logits: each
    # member learns from its own loss, not from the ensemble's. The objective
    # is the sum over members (one for any other model); the reported loss
    # and metric sums are the members' means (evaluation scores the ensemble).
    parts = [masked_cross_entropy(l, micro["tgt_out"], micro["weights"], label_smoothing, divisor)
             for l in aux.get("member_logits", (logits,))]
    objective = sum(p[0] for p in parts)
    loss = objective / len(parts)
    sums = jax.tree.map(lambda *s: sum(s) / len(s), *[p[1] for p in parts])
    scaled = objective if scale is None else objective * scale
    return scaled, (loss, sums, aux)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def one(micro, rng):
    (_, (loss, sums, aux)), grads = grad_fn(state.params, micro, rng)
    metrics = dict(sums, loss=loss)
    if gold_prob is not None:
      metrics["gold_fraction"] = aux["gold_fraction"]
    return grads, metrics

  if grad_accum_steps == 1:
    grads, metrics = one(batch, rng)
  else:
    def body(carry, xs):
      micro, i = xs
      grads, metrics = one(micro, jax.random.fold_in(rng, i))
      return jax.tree.map(jnp.add, carry, (grads, metrics)), None

    zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(
        one, jax.tree.map(lambda x: x[0], micro_batches(batch, grad_accum_steps)), rng))
    (grads, metrics), _ = jax.lax.scan(
        body, zeros, (micro_batches(batch, grad_accum_steps), jnp.arange(grad_accum_steps)))
    if gold_prob is not None:
      metrics["gold_fraction"] = metrics["gold_fraction"] / grad_accum_steps
  if axis_name is not None:
    grads, metrics = jax.lax.psum((grads, metrics), axis_name)
    if gold_prob is not None:
      metrics["gold_fraction"] = metrics["gold_fraction"] / jax.lax.psum(1, axis_name)
  stepping = state if tx is None else state.replace(tx=tx)
  if scale is None:
    new_state = stepping.apply_gradients(grads=grads)
  else:
    grads = jax.tree.map(lambda g: g / scale, grads)
    new_state = stepping.apply_scaled_gradients(grads)
    metrics["loss_scale"] = scale
  new_state = new_state.replace(tx=state.tx)
  metrics["grad_norm"] = optax.tree.norm(grads)
  if learning_rate_fn is not None:
    metrics["learning_rate"] = jnp.asarray(learning_rate_fn(state.step), jnp.float32)
  return skip_nonfinite(state, new_state, metrics, float16=scale is not None)


def skip_nonfinite(state: TrainState, new_state: TrainState, metrics: dict,
                   float16: bool = False):
  """(new_state, metrics), with the update undone if it was not finite.

  A non-finite loss or gradient (a bad batch, a divergence) changes nothing
  but the step counter, inside the step: no host sync. Parameters, every
  optimizer leaf (Adam's count too, so its bias correction and the schedule
  see only the updates applied) and float16's loss scale stay as they were:
  the step is as if its batch had not been drawn. The counter still
  advances so that the data order stays a function of the step.
  `nonfinite_steps` counts it (0 or 1), for the trainer to report, skip or
  stop on (config.train.nonfinite). float16 gradients overflow routinely and
  loss scaling already skips those updates (halving the scale, which is how
  it recovers), so there only the loss counts.
  """
  finite = jnp.isfinite(metrics["loss"])
  if not float16:
    finite &= jnp.isfinite(metrics["grad_norm"])
  metrics["nonfinite_steps"] = jnp.logical_not(finite).astype(jnp.int32)
  kept = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new_state, state)
  return kept.replace(step=new_state.step), metrics


def eval_step(apply_fn, params: Any, batch: dict) -> dict:
  """Teacher-forced metric sums on one batch (no dropout)."""
  logits, _ = apply_fn({"params": params}, batch["src"], batch["src_len"], batch["tgt_in"],
                       train=False)
  return masked_cross_entropy(logits, batch["tgt_out"], batch["weights"])[1]


def step_function(label_smoothing: float = 0.0, scheduled_sampling: bool = False,
                  sample_predictions: bool = False, grad_accum_steps: int = 1,
                  precision: str = "float32", axis_name: Optional[str] = None,
                  train_cfg=None):
  """`train_step` with the run's settings bound:
  step(state, batch, dropout_rng, gold_prob, schedule) -> (state, metrics).

  With `train_cfg` (config.train), the step applies `make_optimizer(train_cfg,
  schedule)`, `schedule` being the `schedule_values` array passed at each
  call, and reports the step's learning rate; the optimizer's kind, clipping
  and decay shape are compiled in, its numbers are not. Without it, the
  state's own optimizer applies and `schedule` is None."""
  settings = dict(grad_accum_steps=grad_accum_steps, precision=precision, axis_name=axis_name)

  def optimizer(schedule):
    if train_cfg is None:
      return {}
    return {"tx": make_optimizer(train_cfg, schedule),
            "learning_rate_fn": learning_rate_schedule(train_cfg, schedule)}

  if scheduled_sampling:
    # gold_prob is an argument, not a constant: its change over training
    # recompiles nothing.
    def step(state, batch, dropout_rng, gold_prob, schedule=None):
      return train_step(state, batch, dropout_rng, label_smoothing, gold_prob,
                        sample_predictions, **settings, **optimizer(schedule))
  else:
    def step(state, batch, dropout_rng, gold_prob=None, schedule=None):
      del gold_prob
      return train_step(state, batch, dropout_rng, label_smoothing, **settings,
                        **optimizer(schedule))

  step.__name__ = "train_step"
  return step


def jit_eval_step(apply_fn):
  return jax.jit(functools.partial(eval_step, apply_fn))


def summarize(sums: dict) -> dict:
  """Sums (possibly over many batches) -> loss, perplexity, token accuracy.

  Plain Python on fetched numbers: no device work, nothing to compile.
  """
  weight = max(float(sums["weight_sum"]), 1.0)
  loss = float(sums["loss_sum"]) / weight
  return {
      "loss": loss,
      "perplexity": math.exp(min(loss, 50.0)),
      "token_accuracy": float(sums["correct_sum"]) / weight,
  }
