"""The speed issue's targets, and the measured ratios held against them."""

from typing import NamedTuple


# -- goals ----------------------------------------------------------------------------

class Goal(NamedTuple):
  """A target of the speed issue: PyTorch / JAX train-step time of `model`
  at the date point at least `target` (above it when `strict`).

  sizes: the sizes the target names (a note says which the measurement
    differs in); point: what changes from --sizes to measure it ({}: the
    headline point; else an extra point labelled `label`)."""
  goal: str
  model: str
  target: float
  sizes: dict
  point: dict = {}
  label: str = ""
  strict: bool = False


_H256 = dict(hidden=256, layers=2, decoder_layers=2)
GOALS = (
    Goal("GRU + Bahdanau h256 (2+2 layers)", "gru_bahdanau", 2.0, _H256),
    Goal("GRU + Bahdanau h64 (1+1 layers)", "gru_bahdanau", 5.0,
         dict(hidden=64, layers=1, decoder_layers=1),
         dict(hidden=64, layers=1, decoder_layers=1), "gru_bahdanau_h64_l1"),
    Goal("plain GRU h256 (2+2 layers)", "gru_plain", 1.5, _H256),
    Goal("Transformer d256, dropout 0", "transformer", 1.2, dict(d_model=256, dropout=0.0),
         dict(dropout=0.0), "transformer_dropout0"),
    Goal("Transformer d256, dropout 0.1", "transformer", 1.2, dict(d_model=256, dropout=0.1),
         dict(dropout=0.1), "transformer_dropout0.1"),
) + tuple(Goal(f"{m} (every other model): ahead", m, 1.0, {}, strict=True)
          for m in ("rnn_plain", "lstm_plain", "rnn_bahdanau", "lstm_bahdanau", "gru_luong"))


def compute_goals(results: dict) -> list:
  """The speed issue's targets (`GOALS`), each with the PyTorch / JAX ratio
  measured at its point (the headline date point at --batch_size, or the
  goal's own sizes there) and whether it is met. A target not measured (no
  --with_torch, model not run, PyTorch skipped) has measured None."""
  o = results["options"]
  src_len, tgt_len = o["date"]
  out = []
  for g in GOALS:
    sizes = dict(o["sizes"], **g.point)
    r = next((r for r in results["points"]
              if r["model"] == g.model and r["sizes"] == sizes and r["status"] == "ok"
              and (r["batch"], r["src_len"], r["tgt_len"]) == (o["batch_size"], src_len,
                                                                 tgt_len)), None)
    t = r and r.get("torch")
    measured = t["ratio"] if t and t.get("status") == "ok" else None
    if measured is None:
      note = "not measured (needs --with_torch, --goals and the model in --models)"
      met = None
    else:
      differ = [f"{k} {sizes[k]:g}" for k, v in g.sizes.items() if sizes[k] != v]
      note = f"measured at {', '.join(differ)}" if differ else ""
      met = bool(measured > g.target if g.strict else measured >= g.target)
    out.append({"goal": g.goal, "model": g.model, "unit": "speed-up", "target": g.target,
                "strict": g.strict, "measured": measured, "met": met, "note": note})
  return out
