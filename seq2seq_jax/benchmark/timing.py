"""Timing a compiled train step, decoding, and JAX beside PyTorch in turns."""

import math
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from seq2seq_jax import decoding, training
from seq2seq_jax.models import recurrent
from seq2seq_jax.benchmark.options import Sizes
from seq2seq_jax.benchmark.models import optimizer_config, twin_sizes
from seq2seq_jax.benchmark.machine import compiled_memory, xla_flops


# -- timing -----------------------------------------------------------------------

def _summary_ms(seconds: Sequence[float]) -> dict:
  ms = [1e3 * s for s in seconds]
  return {"min_ms": min(ms), "median_ms": float(np.median(ms)), "max_ms": max(ms),
          "times_ms": ms}


def time_turns(calls: dict, warmup: int, repeats: int, rounds: int = 1, settle: int = 0) -> dict:
  """Times each of `calls` (name -> a function that returns when its work is
  done) `repeats` times, the calls taking turns: after every call's
  warm-up, `rounds` rounds in which each runs its share of the repeats, the
  order reversed every round, so that a drift in the machine's speed (other
  work on a shared machine) reaches all of them alike.

  settle: untimed calls at the start of every turn. Right after the other
  side's turn, a step pays for threads that still spin or sleep (PyTorch's
  OpenMP workers, XLA's pool; on a 2-core machine the first step of a turn
  measured up to 1.6x the next ones at hidden 64); both sides get the same.

  Returns name -> min / median / max ms over all timed calls, the times,
  and the median of each round.
  """
  for fn in calls.values():
    for _ in range(warmup):
      fn()
  rounds = min(rounds, repeats)
  shares = [repeats // rounds + (i < repeats % rounds) for i in range(rounds)]
  seconds = {name: [] for name in calls}
  round_medians = {name: [] for name in calls}
  order = list(calls)
  for share in shares:
    for name in order:
      for _ in range(settle):
        calls[name]()
      times = []
      for _ in range(share):
        start = time.perf_counter()
        calls[name]()
        times.append(time.perf_counter() - start)
      seconds[name] += times
      round_medians[name].append(1e3 * float(np.median(times)))
    order.reverse()
  return {name: {**_summary_ms(seconds[name]), "round_medians_ms": round_medians[name]}
          for name in calls}


def time_calls(fn: Callable[[], Any], warmup: int, repeats: int) -> dict:
  """Calls fn() warmup times, then times `repeats` calls, each one ended by
  `jax.block_until_ready` on its result."""
  return time_turns({"fn": lambda: jax.block_until_ready(fn())}, warmup, repeats)["fn"]


def _lower_and_compile(jitted, *args):
  start = time.perf_counter()
  lowered = jitted.lower(*args)
  lowered_at = time.perf_counter()
  compiled = lowered.compile()
  done = time.perf_counter()
  return compiled, {"lower_s": lowered_at - start, "compile_s": done - lowered_at}


class TrainStep:
  """The real train step of `model` (`training.step_function`, jitted with
  the state donated, as `parallel.DataParallel` jits it), compiled for one
  batch, which goes to the device first: the host-to-device copy of a
  batch is not part of the step time.

  Calling it runs one step and waits for it; `state` is the train state
  after the last step (its params serve decoding); `record()` has
  "compile" (lower_s, compile_s), "num_params", "xla_flops",
  "compiled_memory".
  """

  def __init__(self, model, batch: dict, seed: int = 0):
    self.batch = jax.device_put(batch)
    self.rng = jax.random.key(seed)
    self.state = training.create_train_state(model, optimizer_config(), self.rng, self.batch)
    jax.block_until_ready(self.state)  # parameter init is not compile time
    step = jax.jit(training.step_function(), donate_argnums=(0,))
    self.compiled, self.compile_times = _lower_and_compile(step, self.state, self.batch,
                                                           self.rng)

  def __call__(self) -> None:
    self.state, metrics = self.compiled(self.state, self.batch, self.rng)  # old state donated
    jax.block_until_ready((self.state, metrics))

  def record(self) -> dict:
    return {"compile": self.compile_times,
            "num_params": int(sum(x.size for x in jax.tree.leaves(self.state.params))),
            "xla_flops": xla_flops(self.compiled),
            "compiled_memory": compiled_memory(self.compiled)}


def time_decode(model, params, src: np.ndarray, src_len: np.ndarray, max_len: int,
                beam_size: int, repeats: int) -> dict:
  """Compiles, then times `decoding.jit_decode` (greedy for beam_size 1) on
  one batch; median of `repeats` calls after one warm-up call."""
  src, src_len = jax.device_put((src, src_len))
  decode = decoding.jit_decode(model, max_len, beam_size=beam_size)
  compiled, compile_times = _lower_and_compile(decode, params, src, src_len)
  out = jax.device_get(compiled(params, src, src_len))
  timing = time_calls(lambda: compiled(params, src, src_len), 0, repeats)
  seconds = timing["median_ms"] / 1e3
  return {"beam_size": beam_size, "max_len": max_len, "compile": compile_times, **timing,
          "steps": int(out["steps"]), "sentences_per_s": src.shape[0] / seconds,
          "tokens_per_s": float(np.sum(out["lengths"][:, 0])) / seconds}


def torch_step(name: str, sizes: Sizes, batch: dict, threads: int):
  """torch_twins's twin of `name` on the same NumPy batch: (step, record).
  step() runs one optimizer step and returns the loss as a Python number,
  which waits for the step to finish; record has the twin's description and
  parameter counts."""
  from seq2seq_jax.benchmark import torch_twins  # noqa: PLC0415  (torch only when asked for)
  twin = twin_sizes(name, sizes)
  step, num_params = torch_twins.step_timer(name, twin, batch, threads)
  return step, {"twin": torch_twins.describe(name, twin), "num_params": int(num_params),
                "extra_params": torch_twins.extra_params(name, twin), "threads": threads}


# -- recurrence variants ------------------------------------------------------------

def _time_grad(loss_fn, args, warmup, repeats) -> dict:
  """Forward + backward of a scalar loss w.r.t. all its arguments."""
  grad = jax.jit(jax.grad(loss_fn, argnums=tuple(range(len(args)))))
  jax.block_until_ready(args)
  compiled, compile_times = _lower_and_compile(grad, *args)
  return {"status": "ok", "compile": compile_times,
          **time_calls(lambda: compiled(*args), warmup, repeats)}


def time_variants(sizes: Sizes, batch: int = 64, length: int = 32, unrolls=(1, 2, 4, 8),
                  warmup: int = 3, repeats: int = 10, seed: int = 0) -> dict:
  """Ways of running one recurrent layer, forward + backward.

  Returns {"config": ..., "results": [{"group", "name", "status", "median_ms",
  ...}]}; groups: "unroll" (run_layer's unroll), "flax" (nn.RNN(GRUCell)
  against our scan), "cudnn" (GPU only).
  """
  import flax.linen as nn  # noqa: PLC0415

  e, h = sizes.embed, sizes.hidden
  rng = np.random.default_rng([seed, batch, length])
  x = jnp.asarray(rng.normal(size=(batch, length, e)).astype(np.float32))
  lengths = jnp.asarray(rng.integers(math.ceil(length / 2), length + 1, size=batch), jnp.int32)
  results = []

  def ours(kind, unroll):
    cell = recurrent.Cell(kind, e, h)
    params = cell.apply(cell.init(jax.random.key(seed)))

    def loss(params, x):
      out, _ = recurrent.run_layer(kind, params, recurrent.project(params, x), lengths,
                                   unroll=unroll)
      return jnp.sum(out)
    return _time_grad(loss, (params, x), warmup, repeats)

  by_unroll = {}
  for unroll in unrolls:
    by_unroll[unroll] = ours("gru", unroll)
    results.append({"group": "unroll", "name": f"run_layer gru unroll={unroll}",
                    **by_unroll[unroll]})

  rnn = nn.RNN(nn.GRUCell(features=h))
  flax_params = rnn.init(jax.random.key(seed), x, seq_lengths=lengths)

  def flax_loss(params, x):
    return jnp.sum(rnn.apply(params, x, seq_lengths=lengths))
  results.append({"group": "flax", "name": "flax nn.RNN(nn.GRUCell) (nn.scan)",
                  **_time_grad(flax_loss, (flax_params, x), warmup, repeats)})
  ours_scan = by_unroll[1] if 1 in by_unroll else ours("gru", 1)
  results.append({"group": "flax", "name": "ours: run_layer gru (lax.scan)", **ours_scan})

  if jax.default_backend() == "gpu":
    from jax.experimental import rnn as jax_rnn  # noqa: PLC0415
    weights = jax_rnn.init_lstm_weight(jax.random.key(seed), e, h, 1, False)
    h0 = jnp.zeros((1, batch, h), jnp.float32)

    def cudnn_loss(weights, x):
      y, _, _ = jax_rnn.lstm(x, h0, h0, weights, lengths, input_size=e, hidden_size=h,
                             num_layers=1, dropout=0.0, bidirectional=False)
      return jnp.sum(y)
    results.append({"group": "cudnn", "name": "cuDNN LSTM (jax.experimental.rnn)",
                    **_time_grad(cudnn_loss, (weights, x), warmup, repeats)})
    results.append({"group": "cudnn", "name": "ours: run_layer lstm", **ours("lstm", 1)})
  else:
    results.append({"group": "cudnn", "name": "cuDNN LSTM (jax.experimental.rnn)",
                    "status": "skipped", "reason": "needs a GPU"})
  return {"config": {"cell": "gru", "batch": batch, "length": length, "in_features": e,
                     "hidden": h, "warmup": warmup, "repeats": repeats},
          "results": results}
