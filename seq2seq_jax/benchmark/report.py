"""Tables (terminal and markdown), plots and the files a run writes."""

import json
import math
import os
from typing import Callable

import numpy as np


# -- reports --------------------------------------------------------------------------

_CACHE_NOTE = ("a persistent compilation cache is in use, so compile times may be cache "
               "loads")


def _plural(n: int, word: str) -> str:
  return f"{n} {word}{'s' * (n != 1)}"


def _fmt(x, spec=".1f", none="-"):
  return none if x is None else format(x, spec)


def _progress_line(r: dict) -> str:
  c, s = r["compile"], r["step"]
  line = (f"compile {c['lower_s']:.1f}+{c['compile_s']:.1f} s, step {s['median_ms']:.1f} ms "
          f"[{s['min_ms']:.1f}-{s['max_ms']:.1f}], {r['tokens_per_s']:,.0f} tok/s, "
          f"{r['flops']['achieved_gflops']:.1f} GFLOP/s "
          f"({100 * r['flops']['peak_fraction']:.0f}% of peak)")
  for name, d in (r.get("decode") or {}).items():
    line += f", {name} {d['sentences_per_s']:,.0f} sent/s"
  t = r.get("torch")
  if t:
    line += (f", torch {t['median_ms']:.1f} ms ({t['ratio']:.2f}x)" if t["status"] == "ok"
             else f", torch skipped ({t['reason']})")
  return line


def _table(headers: list, rows: list, markdown: bool) -> str:
  if markdown:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
  widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
  fmt = lambda row: "  ".join(str(c).rjust(w) for c, w in zip(row, widths))
  return "\n".join([fmt(headers), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def _point_row(r: dict, decode: bool) -> list:
  row = [r["label"], r["batch"], r["src_len"], r["tgt_len"]]
  if r["status"] != "ok":  # the reason goes under the table
    return row + [r["status"]] + ["-"] * (7 + 2 * decode)
  c, s, f = r["compile"], r["step"], r["flops"]
  row += [f"{c['lower_s']:.1f}+{c['compile_s']:.1f}", f"{s['median_ms']:.1f}",
          f"{s['min_ms']:.1f}-{s['max_ms']:.1f}", f"{r['tokens_per_s']:,.0f}",
          f"{f['achieved_gflops']:.1f}", f"{100 * f['peak_fraction']:.1f}%",
          f"{r['memory']['compiled']['total_bytes'] / 2**20:.0f}" if r["memory"]["compiled"]
          else "-"]
  if decode:
    d = r.get("decode") or {}
    row += [_fmt(d[k]["sentences_per_s"], ",.0f") if k in d else "-"
            for k in ("greedy", next((k for k in d if k.startswith("beam")), "beam"))]
  t = r.get("torch")
  row.append(f"{t['median_ms']:.1f} ({t['ratio']:.2f}x)" if t and t["status"] == "ok"
             else ("skipped" if t else "-"))
  return row


def _point_table(points: list, sweep: str, markdown: bool, decode: bool) -> str:
  headers = ["model", "B", "S", "T", "compile s", "step ms", "min-max ms", "tok/s", "GFLOP/s",
             "% peak", "XLA MiB"]
  if decode:
    headers += ["greedy sent/s", "beam sent/s"]
  headers.append("torch ms (torch/jax)")
  chosen = [r for r in points if sweep in r["sweeps"]]
  if not chosen:
    return "(none)"
  table = _table(headers, [_point_row(r, decode) for r in chosen], markdown)
  notes = [f"{'- ' if markdown else '  '}{r['label']} B={r['batch']} S={r['src_len']} "
           f"T={r['tgt_len']}: {r['status']}, {r['reason']}" for r in chosen
           if r["status"] != "ok"]
  notes += [f"{'- ' if markdown else '  '}{r['label']} B={r['batch']} S={r['src_len']} "
            f"T={r['tgt_len']}: PyTorch skipped, {r['torch']['reason']}" for r in chosen
            if r["status"] == "ok" and r.get("torch", {}).get("status") == "skipped"]
  return "\n".join([table] + ([""] + notes if notes else []))


def _variants_table(variants: dict, markdown: bool) -> str:
  rows = [[v["group"], v["name"], _fmt(v.get("median_ms"), ".2f"),
           (f"{v['min_ms']:.2f}-{v['max_ms']:.2f}" if v["status"] == "ok" else v["reason"]),
           _fmt(v.get("compile") and v["compile"]["lower_s"] + v["compile"]["compile_s"], ".2f")]
          for v in variants["results"]]
  return _table(["group", "variant", "median ms", "min-max ms", "compile s"], rows, markdown)


def _goals_table(goals: list, markdown: bool) -> str:
  show = lambda x: "-" if x is None else f"{x:.2f}x"
  rows = [[g["goal"], (">" if g["strict"] else ">=") + " " + show(g["target"]),
           show(g["measured"]), {True: "yes", False: "no", None: "-"}[g["met"]], g["note"]]
          for g in goals]
  return _table(["goal (PyTorch / JAX at the date point)", "target", "measured", "met",
                 "note"], rows, markdown)


def _twins_table(points: list, markdown: bool) -> str:
  """One line per PyTorch twin timed (per label: the sizes differ), with
  both parameter counts."""
  twins = {}
  for r in points:
    t = r.get("torch") or {}
    if t.get("status") == "ok" and r["label"] not in twins:
      extra = t["num_params"] - r["num_params"]
      why = ("" if not extra else f" (+{extra:,}: nn.RNN/nn.LSTM's second bias per gate)"
             if extra == t["extra_params"] else f" ({extra:+,}, unexplained)")
      twins[r["label"]] = [r["label"], t["twin"], f"{r['num_params']:,}",
                           f"{t['num_params']:,}{why}"]
  if not twins:
    return "(none timed)"
  return _table(["model", "PyTorch twin (eager; masked cross-entropy, clip_grad_norm_ 1.0, "
                 "Adam)", "params JAX", "params PyTorch"], list(twins.values()), markdown)


def _sections(results: dict, markdown: bool) -> list:
  """(title, body) of each report section."""
  o = results["options"]
  points = results["points"]
  decode = o["decode"]
  sections = [
      (f"Date point (S={o['date'][0]}, T={o['date'][1]}, B={o['batch_size']})",
       _point_table(points, "date", markdown, decode)),
      (f"Length sweep (S = T = L, B={o['batch_size']})",
       _point_table(points, "length", markdown, decode)),
      (f"Batch sweep (S={o['date'][0]}, T={o['date'][1]})",
       _point_table(points, "batch", markdown, False)),
  ]
  extra = [r for r in points if "goal" in r["sweeps"] and "date" not in r["sweeps"]]
  if extra:
    sections.append((f"Goal points (the targets' other sizes, S={o['date'][0]}, "
                     f"T={o['date'][1]}, B={o['batch_size']})",
                     _point_table(extra, "goal", markdown, False)))
  if any(r.get("torch") for r in points):
    sections.append(("PyTorch twins", _twins_table(points, markdown)))
  if results.get("variants"):
    c = results["variants"]["config"]
    sections.append((f"Recurrence variants (GRU layer, batch {c['batch']}, length "
                     f"{c['length']}, in {c['in_features']}, hidden {c['hidden']}, "
                     "forward + backward)", _variants_table(results["variants"], markdown)))
  if results.get("goals"):
    sections.append(("Goals", _goals_table(results["goals"], markdown)))
  return sections


def text_report(results: dict) -> str:
  """The tables for the terminal."""
  parts = []
  for title, body in _sections(results, markdown=False):
    parts += [title, body, ""]
  return "\n".join(parts)


def markdown_report(results: dict) -> str:
  """benchmark.md: command, machine and date on top, then the tables."""
  m, o = results["machine"], results["options"]
  s = o["sizes"]
  peak = results["matmul_peak"]
  lines = [
      "# Benchmark: scan RNNs against attention",
      "",
      "```",
      results["command"],
      "```",
      "",
      f"- date: {m['date']}",
      f"- machine: {m['cpu_model'] or m['processor'] or m['uname']['machine']}, "
      f"{m['cpu_count']} CPUs; {m['uname']['system']} {m['uname']['release']}",
      f"- device: {m['device_kind']} ({m['backend']}, {m['device_count']} device(s)); "
      f"jax {m['jax']}, jaxlib {m['jaxlib']}, flax {m['flax']}"
      + (f", torch {m['torch']}" if m.get("torch") else ""),
      f"- float32 matmul peak (measured): {peak['gflops']:.1f} GFLOP/s "
      f"(best of n = {', '.join(str(r['n']) for r in peak['by_size'])})",
      f"- sizes: RNNs embed {s['embed']}, hidden {s['hidden']}, "
      f"{s['layers']}+{s['decoder_layers']} (encoder+decoder) layers, attention "
      f"{s['attention_dim']}; Transformer d_model "
      f"{s['d_model']}, {s['heads']} heads, {s['transformer_layers']}+"
      f"{s['transformer_layers']} layers, d_ff {s['d_ff']}; dropout {s['dropout']}; "
      f"vocabularies {s['src_vocab']}/{s['tgt_vocab']}",
      f"- {_plural(o['warmup'], 'warm-up step')}, {o['repeats']} timed"
      + (f", JAX and PyTorch in turns over {_plural(o['rounds'], 'round')}, each turn "
         "opened by one untimed step" if o["with_torch"] else "") + "; compile s = lower + compile; "
      "GFLOP/s from the analytic matmul count over the padded lengths (the GRU kernels "
      "skip padded steps, so theirs overstate the work done); XLA MiB = temp + argument + output of "
      "the compiled step; torch/jax above 1 means JAX is faster",
  ]
  if m.get("host_settings"):
    lines.append("- host settings (`seq2seq_jax/host.py`, the same process for JAX and PyTorch): "
                 + ", ".join(f"{k} {'on' if v else 'off'}" for k, v in m["host_settings"].items()))
  if "cpu_kernels" in m:  # the instruction set of the kernels used, or None
    lines.append("- GRU layers and Bahdanau GRU decoder loops: " + (
        f"the compiled CPU kernels, built for {m['cpu_kernels']} "
        "(`model.recurrence=\"fused\"`, seq2seq_jax/models/cpu/)"
        if m["cpu_kernels"] else "JAX's loops (no compiled kernels here)"))
  if m["compilation_cache_dir"]:
    lines.append(f"- note: {_CACHE_NOTE} (`{m['compilation_cache_dir']}`)")
  lines.append("")
  for title, body in _sections(results, markdown=True):
    lines += [f"## {title}", "", body, ""]
  lines += ["Skipped points and how times are estimated: see the docstring of "
            "`seq2seq_jax/benchmark/__init__.py`.", ""]
  return "\n".join(lines)


def plot_step_times(results: dict, path: str) -> None:
  """Log-log step time against length (the length sweep), one line per
  model; PyTorch twins dashed in the same colour."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
  from matplotlib.figure import Figure  # noqa: PLC0415

  fig = Figure(figsize=(7, 5))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  length_points = [r for r in results["points"] if "length" in r["sweeps"] and r["status"] == "ok"]
  for i, model in enumerate(dict.fromkeys(r["label"] for r in length_points)):
    rows = sorted((r for r in length_points if r["label"] == model), key=lambda r: r["src_len"])
    color = f"C{i % 10}"
    ax.plot([r["src_len"] for r in rows], [r["step"]["median_ms"] for r in rows], "o-",
            color=color, label=model)
    torch_rows = [r for r in rows if r.get("torch", {}).get("status") == "ok"]
    if torch_rows:
      ax.plot([r["src_len"] for r in torch_rows], [r["torch"]["median_ms"] for r in torch_rows],
              "s--", color=color, label=f"{model} (PyTorch)")
  ax.set_xscale("log", base=2)
  ax.set_yscale("log")
  lengths = sorted({r["src_len"] for r in length_points})
  if lengths:  # the measured lengths as plain numbers, not powers of 2
    ax.set_xticks(lengths, [str(n) for n in lengths])
    ax.set_xticks([], minor=True)
  ax.set_xlabel("length (source = target)")
  ax.set_ylabel("train step, median ms")
  o = results["options"]
  ax.set_title(f"Train step time, batch {o['batch_size']} ({results['machine']['device_kind']})")
  ax.grid(True, which="both", alpha=0.3)
  if length_points:
    ax.legend(fontsize=8)
  _atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120), binary=True)


def plot_date_point(results: dict, path: str) -> None:
  """Horizontal bars of the date point's step time per model (and the goal
  points), JAX beside its PyTorch twin when measured: the comparison a
  reader wants at a glance."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
  from matplotlib.figure import Figure  # noqa: PLC0415

  rows = [r for r in results["points"] if r["status"] == "ok"
          and ("date" in r["sweeps"] or "goal" in r["sweeps"])]
  rows = list({r["label"]: r for r in rows}.values())  # one bar pair per model
  fig = Figure(figsize=(7, 0.45 * len(rows) + 1.6))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  y = np.arange(len(rows))
  ax.barh(y - 0.2, [r["step"]["median_ms"] for r in rows], 0.4, label="JAX (this project)")
  torch_ms = [r.get("torch", {}).get("median_ms") if r.get("torch", {}).get("status") == "ok"
              else np.nan for r in rows]
  if not all(np.isnan(torch_ms)):
    ax.barh(y + 0.2, torch_ms, 0.4, label="PyTorch twin (eager)")
  ax.set_yticks(y, [r["label"] for r in rows])
  ax.invert_yaxis()
  ax.set_xlabel("train step, median ms (shorter is faster)")
  o = results["options"]
  ax.set_title(f"Train step at the date point, batch {o['batch_size']} "
               f"({results['machine']['device_kind']})")
  ax.grid(True, axis="x", alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  _atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120), binary=True)


def _jsonable(x):
  """x with NumPy scalars as Python ones and NaN/inf as None (not JSON)."""
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, np.generic):
    x = x.item()
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return x


def _atomic_write(path: str, write: Callable, binary: bool = False) -> None:
  """Writes via a temporary file and os.replace: a reader never sees half a file."""
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    with open(tmp, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
      write(f)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_outputs(results: dict, out_dir: str) -> dict:
  """benchmark.json, benchmark.md, date_point.png and (with a length sweep)
  step_time_vs_length.png in out_dir."""
  os.makedirs(out_dir, exist_ok=True)
  files = {"json": os.path.join(out_dir, "benchmark.json"),
           "markdown": os.path.join(out_dir, "benchmark.md"),
           "date_plot": os.path.join(out_dir, "date_point.png")}
  if any("length" in r["sweeps"] for r in results["points"]):
    files["plot"] = os.path.join(out_dir, "step_time_vs_length.png")
  results = dict(results, files=files)
  _atomic_write(files["json"], lambda f: (json.dump(_jsonable(results), f, indent=2),
                                          f.write("\n")))
  _atomic_write(files["markdown"], lambda f: f.write(markdown_report(results)))
  plot_date_point(results, files["date_plot"])
  if "plot" in files:
    plot_step_times(results, files["plot"])
  return files
