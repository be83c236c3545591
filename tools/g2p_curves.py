"""Validation WER against wall time, one line per run: the G2P configs tried.

  python tools/g2p_curves.py --out=docs/g2p/valid_wer_vs_time.png \
      "g2p_bahdanau=runs/g2p_bahdanau" "g2p_long=runs/g2p_long" [--line "both=24.77"]

Each argument is label=workdir. The x axis is `elapsed_seconds` of each
validation record: seconds since the run started (its data loading and
compiling included). Each run's test WER (beam) is marked at its last point.
A run that was resumed restarts its clock, so give whole runs.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from seq2seq_jax.metric_writer import read_metrics  # noqa: E402


def curves(runs: list) -> list:
  """[(label, minutes, valid WER %, test WER % or None)] from label=workdir."""
  out = []
  for spec in runs:
    label, _, workdir = spec.partition("=")
    if not workdir:
      raise SystemExit(f"error: {spec!r} is not label=workdir")
    if not os.path.isfile(os.path.join(workdir, "metrics.jsonl")):
      raise SystemExit(f"error: {workdir} has no metrics.jsonl")
    valid = [r for r in read_metrics(workdir, "valid") if "elapsed_seconds" in r]
    if not valid or "wer" not in valid[0]:
      raise SystemExit(f"error: {workdir} has no validation WER with elapsed_seconds "
                       "(a G2P run from before they were recorded?)")
    test = read_metrics(workdir, "test")
    out.append((label, [r["elapsed_seconds"] / 60 for r in valid],
                [100 * r["wer"] for r in valid],
                (test[-1]["elapsed_seconds"] / 60, 100 * test[-1]["wer"]) if test else None))
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("runs", nargs="+", help="label=workdir")
  parser.add_argument("--out", required=True, help="the PNG to write")
  parser.add_argument("--title", default="CMUdict G2P, validation WER (first 1,000 words, beam)")
  parser.add_argument("--line", action="append", default=[],
                      help="label=WER: a dotted line at a further test WER (%%), e.g. an "
                           "ensemble of the runs decoded by `evaluate --ensemble`")
  args = parser.parse_args()
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  fig, ax = plt.subplots(figsize=(7, 4.2))
  for label, minutes, wer, test in curves(args.runs):
    line, = ax.plot(minutes, wer, marker="o", label=label)
    if test is not None:
      ax.plot([test[0]], [test[1]], marker="*", markersize=12, color=line.get_color())
      ax.annotate(f"test {test[1]:.2f} %", test, textcoords="offset points", xytext=(4, 4),
                  fontsize=8, color=line.get_color())
  lines = [("24 % target (test)", "24.0")] + [spec.partition("=")[::2] for spec in args.line]
  for i, (label, value) in enumerate(lines):
    try:
      y = float(value)
    except ValueError:
      raise SystemExit(f"error: --line {label}={value}: the WER must be a number") from None
    ax.axhline(y, color="grey" if i == 0 else "black", linestyle="--" if i == 0 else ":",
               linewidth=1)
    ax.text(0.01, y + 0.2, label if i == 0 else f"{label}: {y:.2f} %", fontsize=8,
            color="grey" if i == 0 else "black", transform=ax.get_yaxis_transform())
  ax.set_xlabel("wall time since the run started (minutes)")
  ax.set_ylabel("WER (%)")
  ax.set_title(args.title, fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, title="valid (o), test (*)", title_fontsize=8)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  fig.savefig(args.out, dpi=110)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
