"""`run(options)`: the whole benchmark, from the plan to the written report."""

import dataclasses
import shlex
from typing import Callable, Optional

import jax

from seq2seq_jax.errors import UserError
from seq2seq_jax.benchmark.options import Options, TORCH_MAX_LEN, torch_version, validate
from seq2seq_jax.benchmark.machine import analytic_flops, machine_info, measure_matmul_peak
from seq2seq_jax.benchmark.timing import time_variants
from seq2seq_jax.benchmark.goals import compute_goals
from seq2seq_jax.benchmark.sweep import _Point, _SkipRule, measure_point, plan
from seq2seq_jax.benchmark.report import _CACHE_NOTE, _jsonable, _progress_line, text_report, write_outputs


def run(options: Options, command: Optional[str] = None,
        log: Callable[[str], None] = print) -> dict:
  """Runs the benchmark and writes its files to options.out_dir.

  Args:
    options: what to run (validated here; a bad value raises ConfigError).
    command: the command line to record (default: flags equivalent to
      `options`).
    log: where progress lines go.
  Returns:
    The results dict written to benchmark.json.
  """
  options = options.resolved()
  validate(options)
  if options.with_torch and torch_version() is None:
    raise UserError("--with_torch needs PyTorch, which cannot be imported here "
                    "(pip install torch), or leave out --with_torch")
  o = options
  equivalent = shlex.join(["python", "-m", "seq2seq_jax.benchmark"] + o.to_argv())
  results = {
      "command": command or equivalent,
      "equivalent_command": equivalent,
      "options": _jsonable(dataclasses.asdict(o)),
      "machine": machine_info(o.with_torch),
  }
  log(f"benchmark: {results['machine']['device_kind']} ({results['machine']['backend']}), "
      f"{results['machine']['cpu_count']} CPUs, jax {jax.__version__}")
  if results["machine"]["compilation_cache_dir"]:
    log(f"note: {_CACHE_NOTE} ({results['machine']['compilation_cache_dir']})")
  results["matmul_peak"] = measure_matmul_peak(o.matmul_sizes)
  peak = results["matmul_peak"]["gflops"]
  log(f"float32 matmul peak: {peak:.1f} GFLOP/s")

  points = plan(o)
  records = []
  skip = _SkipRule(o.max_seconds_per_point, o.warmup + o.repeats)
  skip_torch = _SkipRule(o.max_seconds_per_point, o.warmup + o.repeats, torch=True)
  for i, p in enumerate(points, 1):
    flops = analytic_flops(p.model, p.sizes, p.batch, p.src_len, p.tgt_len)
    head = {"model": p.model, "label": p.label, "batch": p.batch, "src_len": p.src_len,
            "tgt_len": p.tgt_len, "sweeps": p.sweeps, "sizes": dataclasses.asdict(p.sizes)}
    where = f"[{i}/{len(points)}] {p.label} B={p.batch} S={p.src_len} T={p.tgt_len}"
    if p.capped:
      reason, estimate = (f"length {p.src_len} > --capped_max_len={o.capped_max_len} for the "
                          "capped models (--capped_models)"), None
    else:
      reason, estimate = skip.check(p.chains, flops)
    if reason:
      records.append({**head, "status": "skipped", "reason": reason,
                      "estimated_seconds": estimate})
      log(f"{where}: skipped, {reason}")
      continue
    torch_skip = _torch_skip(p, flops, skip_torch) if p.torch else None
    try:
      record = measure_point(p, o, peak, torch_skip)
    except Exception as e:  # noqa: BLE001  (one failing point, e.g. out of memory, ends no run)
      message = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
      records.append({**head, "status": "error", "reason": message})
      log(f"{where}: error, {message}")
      continue
    skip.measured(p.chains, record, flops)
    if record.get("torch", {}).get("status") == "ok":
      skip_torch.measured(p.chains, record["torch"], flops)
    records.append({**head, **record})
    log(f"{where}: {_progress_line(records[-1])}")
  results["points"] = records
  if o.variants:
    log(f"recurrence variants: GRU layer, batch {o.variant_batch}, length {o.variant_length}")
    results["variants"] = time_variants(o.sizes, o.variant_batch, o.variant_length,
                                        o.variant_unrolls, o.warmup, o.repeats, o.seed)
  else:
    results["variants"] = None
  results["goals"] = compute_goals(results) if o.goals else None
  results["files"] = write_outputs(results, o.out_dir)
  log("")
  log(text_report(results))
  log(f"wrote {', '.join(results['files'].values())}")
  return results


def _torch_skip(p: _Point, flops: int, skip: _SkipRule) -> Optional[dict]:
  """Why the PyTorch twin is not run at this point (under the same skip
  rule as JAX), as its record; None if it is run."""
  if p.model == "transformer" and max(p.src_len, p.tgt_len) > TORCH_MAX_LEN:
    return {"status": "skipped",
            "reason": f"torch_twins's Transformer has {TORCH_MAX_LEN} positions"}
  reason, estimate = skip.check(p.chains, flops)
  if reason:
    return {"status": "skipped", "reason": reason, "estimated_seconds": estimate}
  return None
