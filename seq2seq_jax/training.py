"""Train state, loss, optimizer, schedules and the jit-compiled steps.

A batch is the dict made by `data.batching` (`src`, `src_len`, `tgt_in`,
`tgt_out`, `weights`, ...). Step metrics are *sums* (`loss_sum`,
`weight_sum`, `correct_sum`), so any number of batches (or devices) combine by
adding before dividing once.
"""

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

Array = jax.Array
TrainState = train_state.TrainState


def learning_rate_schedule(cfg) -> optax.Schedule:
  """Linear warmup from 0 to `cfg.learning_rate`, then the chosen decay."""
  peak, warmup = cfg.learning_rate, cfg.warmup_steps
  decay_steps = max(cfg.num_steps - warmup, 1)
  end = peak * cfg.end_lr_factor
  if cfg.decay == "cosine":
    decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=cfg.end_lr_factor)
  elif cfg.decay == "linear":
    decay = optax.linear_schedule(peak, end, decay_steps)
  elif cfg.decay == "rsqrt":
    # Vaswani et al. 2017: after warmup, the rate falls as 1/sqrt(step).
    start = max(warmup, 1)
    decay = lambda count: peak * jnp.sqrt(start / (count + start))
  else:
    decay = optax.constant_schedule(peak)
  if warmup == 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


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


def make_optimizer(cfg) -> optax.GradientTransformation:
  """Adam or AdamW on the schedule, after global-norm clipping."""
  schedule = learning_rate_schedule(cfg)
  if cfg.optimizer == "adamw":
    opt = optax.adamw(schedule, weight_decay=cfg.weight_decay)
  else:
    opt = optax.adam(schedule)
  if cfg.grad_clip_norm > 0:
    opt = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), opt)
  return opt


def create_train_state(model: nn.Module, cfg, rng: Array, batch: dict) -> TrainState:
  """Initializes parameters from one batch's shapes (values do not matter)."""
  tx = make_optimizer(cfg)

  @jax.jit  # one compilation for all of it, instead of one per parameter shape
  def init(rng, src, src_len, tgt_in):
    params_rng, dropout_rng = jax.random.split(rng)
    params = model.init({"params": params_rng, "dropout": dropout_rng},
                        src, src_len, tgt_in, train=False)["params"]
    state = TrainState.create(apply_fn=model.apply, params=params, tx=tx)
    # An int32 array from the start (not Python's 0), so the first step and
    # all later ones share one compiled train step per batch shape.
    return state.replace(step=jnp.zeros((), jnp.int32))

  return init(rng, batch["src"], batch["src_len"], batch["tgt_in"])


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
                         label_smoothing: float = 0.0):
  """Mean cross-entropy over real target tokens (weights 1) and their count.

  Padding (weight 0) contributes nothing: neither to the sum nor the count.
  """
  loss_sum = jnp.sum(smoothed_token_losses(logits, targets, label_smoothing) * weights)
  weight_sum = jnp.sum(weights)
  return loss_sum / jnp.maximum(weight_sum, 1.0), weight_sum


def _sums(logits, batch) -> dict:
  weights = batch["weights"]
  correct = (jnp.argmax(logits, -1) == batch["tgt_out"]) * weights
  return {
      "loss_sum": jnp.sum(token_losses(logits, batch["tgt_out"]) * weights),
      "weight_sum": jnp.sum(weights),
      "correct_sum": jnp.sum(correct),
  }


def train_step(state: TrainState, batch: dict, dropout_rng: Array, label_smoothing: float = 0.0,
               gold_prob: Any = None, sample_predictions: bool = False):
  """One optimizer step -> (new state, metric sums).

  Dropout's key is `fold_in(dropout_rng, step)`, a function of the step alone,
  so a resumed run draws exactly the masks an uninterrupted run would. The
  objective may be label-smoothed; the metric sums are always the plain
  negative log-likelihood, so perplexities compare across settings.
  """
  rng = jax.random.fold_in(dropout_rng, state.step)
  kwargs = {}
  if gold_prob is not None:  # scheduled sampling; gold_prob is a traced scalar
    kwargs = {"gold_prob": gold_prob, "sample_predictions": sample_predictions}

  def loss_fn(params):
    logits, aux = state.apply_fn(
        {"params": params}, batch["src"], batch["src_len"], batch["tgt_in"], train=True,
        rngs={"dropout": rng, "sampling": jax.random.fold_in(rng, 1)}, **kwargs)
    loss, _ = masked_cross_entropy(logits, batch["tgt_out"], batch["weights"], label_smoothing)
    return loss, (logits, aux)

  (loss, (logits, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  new_state = state.apply_gradients(grads=grads)
  metrics = _sums(jax.lax.stop_gradient(logits), batch)
  if gold_prob is not None:
    metrics["gold_fraction"] = aux["gold_fraction"]
  metrics["grad_norm"] = optax.tree.norm(grads)
  metrics["loss"] = loss
  return new_state, metrics


def eval_step(apply_fn, params: Any, batch: dict) -> dict:
  """Teacher-forced metric sums on one batch (no dropout)."""
  logits, _ = apply_fn({"params": params}, batch["src"], batch["src_len"], batch["tgt_in"],
                       train=False)
  return _sums(logits, batch)


def jit_train_step(label_smoothing: float = 0.0, scheduled_sampling: bool = False,
                   sample_predictions: bool = False):
  """`train_step` compiled once per batch shape, with the old state donated
  so its buffers are reused for the new one.

  Each call wraps a new function object, so each run gets its own jit cache
  and `_cache_size()` counts that run's compilations only.
  """
  if scheduled_sampling:
    # gold_prob is an argument, not a constant: its change over training
    # recompiles nothing.
    def step(state, batch, dropout_rng, gold_prob):
      return train_step(state, batch, dropout_rng, label_smoothing, gold_prob,
                        sample_predictions)
  else:
    def step(state, batch, dropout_rng, gold_prob=None):
      del gold_prob
      return train_step(state, batch, dropout_rng, label_smoothing)

  step.__name__ = "train_step"
  return jax.jit(step, donate_argnums=(0,))


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
