"""The sweep: which points to measure, and measuring one."""

import dataclasses
from typing import Optional

from seq2seq_jax.benchmark.options import Options, Sizes
from seq2seq_jax.benchmark.models import build_model, synthetic_batch
from seq2seq_jax.benchmark.machine import analytic_flops, memory_snapshot
from seq2seq_jax.benchmark.timing import TrainStep, time_decode, time_turns, torch_step
from seq2seq_jax.benchmark.goals import GOALS


# -- the sweep ------------------------------------------------------------------------

@dataclasses.dataclass
class _Point:
  """One (model, sizes, batch, lengths) to measure, and the sweeps it is in."""
  model: str
  label: str  # the model name, or a goal's label for its sizes ("gru_bahdanau_h64_l1")
  sizes: Sizes
  batch: int
  src_len: int
  tgt_len: int
  sweeps: list
  chains: list  # sweeps the point is in, as (label, sweep): skips are estimated along them
  decode: bool = False
  torch: bool = False
  capped: bool = False


def plan(options: Options) -> list:
  """The points of a run, in the order they are measured: per model, the
  batch sweep at the date point (it contains the headline point at
  --batch_size), then the length sweep; then the goals' extra points (at
  the date point, where a target's sizes are not the headline's)."""
  o = options
  src_d, tgt_d = o.date
  points = {}

  def add(model, label, sizes, b, s, t, sweep, chain, decode, capped=False):
    key = (model, sizes, b, s, t)
    if key in points:  # one measurement serves both sweeps
      points[key].sweeps.append(sweep)
      points[key].chains.append(chain)
      points[key].decode |= decode
      return
    points[key] = _Point(model, label, sizes, b, s, t, [sweep], [chain], decode,
                         o.with_torch, capped)

  for model in o.models:
    for b in sorted(set(o.batch_sizes) | {o.batch_size}):
      sweep = "date" if b == o.batch_size else "batch"
      add(model, model, o.sizes, b, src_d, tgt_d, sweep, (model, "batch"),
          o.decode and b == o.batch_size)
      if b == o.batch_size and b in o.batch_sizes:
        points[(model, o.sizes, b, src_d, tgt_d)].sweeps.append("batch")
    for length in sorted(o.lengths):
      capped = (model in o.capped_models and o.capped_max_len > 0
                and length > o.capped_max_len)
      add(model, model, o.sizes, o.batch_size, length, length, "length", (model, "length"),
          o.decode and length <= o.decode_max_len, capped)
  if o.with_torch and o.goals:
    for goal in GOALS:  # the sizes the targets name beside the headline's
      if goal.point and goal.model in o.models:
        add(goal.model, goal.label, dataclasses.replace(o.sizes, **goal.point), o.batch_size,
            src_d, tgt_d, "goal", (goal.label, "goal"), False)
  return list(points.values())


class _SkipRule:
  """Skips points predicted to take longer than `limit` seconds.

  Points of one sweep (a chain) are measured smallest first. A point's time
  is predicted from the last measured point of its chain: its compile time
  plus (warm-up + repeats) of its median step scaled by the ratio of
  analytic FLOPs. Once a point of a chain is skipped, the larger points
  after it are skipped too.
  """

  def __init__(self, limit: float, steps: int, torch: bool = False):
    self.limit, self.steps, self.torch = limit, steps, torch
    self.last = {}  # chain -> (record, flops) of its last measured point
    self.blocked = {}  # chain -> why the rest of it is skipped

  def _estimate(self, prev: dict, prev_flops: int, flops: int) -> float:
    scale = flops / max(prev_flops, 1)
    if self.torch:  # eager PyTorch: nothing to compile
      return self.steps * prev["median_ms"] / 1e3 * scale
    compile_s = prev["compile"]["lower_s"] + prev["compile"]["compile_s"]
    return compile_s + self.steps * prev["step"]["median_ms"] / 1e3 * scale

  def check(self, chains: list, flops: int):
    """(reason, estimated seconds): reason is None if the point is to be run."""
    for chain in chains:
      if chain in self.blocked:
        return self.blocked[chain], None
    estimates = [self._estimate(*self.last[c], flops) for c in chains if c in self.last]
    estimate = max(estimates, default=None)
    if estimate is not None and estimate > self.limit:
      reason = f"estimated {estimate:.0f} s > --max_seconds_per_point={self.limit:g}"
      for chain in chains:
        self.blocked[chain] = f"a smaller point of this sweep was skipped ({reason})"
      return reason, estimate
    return None, estimate

  def measured(self, chains: list, record: dict, flops: int) -> None:
    for chain in chains:
      self.last[chain] = (record, flops)


def measure_point(p: _Point, options: Options, peak_gflops: float,
                  torch_skip: Optional[dict] = None) -> dict:
  """Train step (and decoding, and PyTorch, as planned) at one point. JAX
  and PyTorch take turns (`time_turns`); torch_skip: why PyTorch is not
  run here (a record with status "skipped"), or None."""
  o = options
  batch = synthetic_batch(p.batch, p.src_len, p.tgt_len, p.sizes.src_vocab,
                          p.sizes.tgt_vocab, o.seed)
  model = build_model(p.model, p.sizes, max_len=max(p.src_len, p.tgt_len))
  train = TrainStep(model, batch, o.seed)
  calls = {"jax": train}
  if p.torch and torch_skip is None:
    calls["torch"], torch_record = torch_step(p.model, p.sizes, batch, o.torch_threads)
  times = time_turns(calls, o.warmup, o.repeats, o.rounds, settle=1 if len(calls) > 1 else 0)
  info = train.record()
  flops = analytic_flops(p.model, p.sizes, p.batch, p.src_len, p.tgt_len)
  seconds = times["jax"]["median_ms"] / 1e3
  tokens = float(batch["weights"].sum())
  achieved = flops / seconds / 1e9
  record = {
      "status": "ok",
      "num_params": info["num_params"],
      "compile": info["compile"],
      "step": times["jax"],
      "target_tokens": tokens,
      "tokens_per_s": tokens / seconds,
      "flops": {"analytic": flops, "xla": info["xla_flops"],
                "achieved_gflops": achieved, "peak_fraction": achieved / peak_gflops},
      "memory": {**memory_snapshot(), "compiled": info["compiled_memory"]},
  }
  if "torch" in times:
    record["torch"] = {"status": "ok", **torch_record, **times["torch"],
                       "ratio": times["torch"]["median_ms"] / times["jax"]["median_ms"]}
  elif p.torch:
    record["torch"] = torch_skip
  if p.decode:
    record["decode"] = {}
    for beam in sorted({1, o.beam_size}):
      name = "greedy" if beam == 1 else f"beam{beam}"
      record["decode"][name] = time_decode(model, train.state.params, batch["src"],
                                           batch["src_len"], p.tgt_len, beam, o.decode_repeats)
  return record
