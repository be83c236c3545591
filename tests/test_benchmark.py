"""The benchmark: a tiny sweep's reports, the FLOP count, flag errors.

Speed itself is never asserted (speed goals live in the benchmark's report,
not in tests): only that every number is there, positive and consistent.
The sweep is shrunk so the whole file stays well under a minute on 2 cores:
the date point coincides with the shortest length point and the batch sweep
with --batch_size, so each model compiles its train step once or twice.
"""

import dataclasses
import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from seq2seq_jax import benchmark as bm
from seq2seq_jax.benchmark import report as bm_report
from seq2seq_jax.benchmark import runner as bm_runner
from seq2seq_jax.benchmark import sweep as bm_sweep
from seq2seq_jax.data.tokenizers import BOS, EOS, PAD
from seq2seq_jax.errors import ConfigError, UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY_SIZES = bm.Sizes(embed=8, hidden=16, layers=1, decoder_layers=1, attention_dim=8,
                      d_model=16, heads=2, transformer_layers=1, d_ff=32, dropout=0.0)


def tiny_options(out_dir, **overrides) -> bm.Options:
  options = dict(
      models=("gru_bahdanau", "lstm_plain", "transformer"), preset="cpu", lengths=(8, 16),
      batch_size=4, batch_sizes=(4,), date=(8, 8), sizes=TINY_SIZES, warmup=1, repeats=2,
      decode=True, decode_max_len=8, decode_repeats=2, variants=True, variant_batch=4,
      variant_length=4, variant_unrolls=(1, 2), capped_models=("lstm_plain",),
      capped_max_len=8, matmul_sizes=(64, 128), goals=True, out_dir=str(out_dir))
  options.update(overrides)
  return bm.Options(**options)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  out_dir = tmp_path_factory.mktemp("benchmark")
  results = bm.run(tiny_options(out_dir), log=lambda line: None)
  return out_dir, results


def test_tiny_sweep_writes_json_markdown_and_plot(tiny):
  out_dir, results = tiny
  with open(out_dir / "benchmark.json", encoding="utf-8") as f:
    saved = json.load(f)
  assert saved["points"] == json.loads(json.dumps(bm_report._jsonable(results["points"])))
  for key in ("command", "equivalent_command", "options", "machine", "matmul_peak", "points",
              "variants", "goals"):
    assert key in saved, key
  machine = saved["machine"]
  for key in ("date", "processor", "uname", "cpu_count", "jax", "jaxlib", "flax",
              "device_kind", "backend"):
    assert key in machine, key
  assert saved["command"].startswith("python -m seq2seq_jax.benchmark ")
  assert saved["matmul_peak"]["gflops"] > 0
  assert [r["n"] for r in saved["matmul_peak"]["by_size"]] == [64, 128]

  markdown = (out_dir / "benchmark.md").read_text(encoding="utf-8")
  assert saved["command"] in markdown
  for title in ("## Date point", "## Length sweep", "## Batch sweep", "## Recurrence variants",
                "## Goals"):
    assert title in markdown, title
  assert "| gru_bahdanau | 4 | 8 | 8 |" in markdown
  for png in ("step_time_vs_length.png", "date_point.png"):
    with open(out_dir / png, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert not [n for n in os.listdir(out_dir) if ".tmp" in n]  # atomic writes left nothing


def test_every_point_has_sane_numbers(tiny):
  _, results = tiny
  points = {(r["label"], r["src_len"]): r for r in results["points"]}
  assert set(points) == {(m, n) for m in ("gru_bahdanau", "lstm_plain", "transformer")
                         for n in (8, 16)}
  # The date point (8, 8) at batch 4 is the length-8 point and the batch sweep's.
  assert sorted(points[("transformer", 8)]["sweeps"]) == ["batch", "date", "length"]
  skipped = points[("lstm_plain", 16)]
  assert skipped["status"] == "skipped" and "--capped_max_len=8" in skipped["reason"]

  for (model, length), r in points.items():
    if r is skipped:
      continue
    assert r["status"] == "ok", r
    assert (r["batch"], r["tgt_len"]) == (4, length)
    assert r["compile"]["lower_s"] > 0 and r["compile"]["compile_s"] > 0
    step = r["step"]
    assert 0 < step["min_ms"] <= step["median_ms"] <= step["max_ms"]
    assert len(step["times_ms"]) == 2
    batch = bm.synthetic_batch(4, length, length, 40, 16)
    assert r["target_tokens"] == batch["weights"].sum() > 0
    assert r["tokens_per_s"] == pytest.approx(r["target_tokens"] / step["median_ms"] * 1e3)
    flops = r["flops"]
    assert flops["analytic"] == bm.analytic_flops(model, TINY_SIZES, 4, length, length)
    assert flops["xla"] is None or flops["xla"] > 0
    assert flops["achieved_gflops"] > 0 and 0 < flops["peak_fraction"]
    memory = r["memory"]
    assert memory["source"] in ("process_rss", "device_peak_bytes_in_use")
    assert memory["peak_bytes"] > 0
    assert memory["compiled"] is None or memory["compiled"]["total_bytes"] > 0
    assert r["num_params"] > 0
    if length == 8:  # decoded: the date point, and lengths <= --decode_max_len
      assert set(r["decode"]) == {"greedy", "beam4"}
      for d in r["decode"].values():
        assert 0 < d["min_ms"] <= d["median_ms"] <= d["max_ms"]
        assert d["sentences_per_s"] > 0 and 1 <= d["steps"] <= 8
    else:
      assert "decode" not in r
    assert "torch" not in r

  variants = {v["name"]: v for v in results["variants"]["results"]}
  for name in ("run_layer gru unroll=1", "run_layer gru unroll=2",
               "flax nn.RNN(nn.GRUCell) (nn.scan)", "ours: run_layer gru (lax.scan)"):
    assert variants[name]["status"] == "ok" and variants[name]["median_ms"] > 0, name
  cudnn = variants["cuDNN LSTM (jax.experimental.rnn)"]
  assert cudnn["status"] == "ok" or cudnn["reason"] == "needs a GPU"

  goals = results["goals"]
  assert [g["goal"] for g in goals] == [g.goal for g in bm.GOALS]
  assert all(g["measured"] is None and g["met"] is None for g in goals)  # no torch


def test_analytic_flops_by_hand():
  """A 1-layer GRU encoder and plain GRU decoder, counted here on its own."""
  s = dataclasses.replace(TINY_SIZES, embed=8, hidden=16, layers=1, tgt_vocab=16)
  b, src, tgt = 4, 8, 6
  g = 3 * 16  # three gates
  forward = (2 * (b * src) * 8 * g  # encoder input projection
             + 2 * (b * src) * 16 * g  # encoder recurrence, every padded step
             + 2 * b * 16 * 16  # bridge to the decoder's initial state
             + 2 * (b * tgt) * 8 * g  # decoder: embeddings' input projection
             + 2 * b * 16 * g  # decoder: the fixed context's input projection, once
             + 2 * (b * tgt) * 16 * g  # decoder recurrence
             + 2 * (b * tgt) * (16 + 16 + 8) * 16)  # readout [h; c; e] -> vocab
  assert forward == 167_936
  assert bm.analytic_flops("gru_plain", s, b, src, tgt, train=False) == forward
  # A second decoder layer: its bridge, input projection and recurrence.
  deeper = dataclasses.replace(s, decoder_layers=2)
  assert bm.analytic_flops("gru_plain", deeper, b, src, tgt, train=False) == (
      forward + 2 * b * 16 * 16 + 2 * 2 * (b * tgt) * 16 * g)
  assert bm.analytic_flops("gru_plain", s, b, src, tgt) == 3 * forward
  # Growing the hidden size of an LSTM adds 4/3 of the GRU's gate matmuls.
  assert (bm.analytic_flops("lstm_plain", s, b, src, tgt)
          > bm.analytic_flops("gru_plain", s, b, src, tgt))
  with pytest.raises(ConfigError):
    bm.analytic_flops("gru_transformer", s, b, src, tgt)


def test_xla_flops_agree_for_the_scan_free_transformer(tiny):
  """No loop in the Transformer's train step, so XLA counts every matmul; it
  also counts elementwise work, softmaxes and Adam, so it is somewhat above
  our matmul-only count. (Recurrent models: XLA counts a scan body once.)"""
  _, results = tiny
  points = [r for r in results["points"] if r["label"] == "transformer"]
  assert sorted(r["src_len"] for r in points) == [8, 16]
  for r in points:
    assert r["flops"]["xla"] is not None  # XLA's CPU backend counts them
    ratio = r["flops"]["xla"] / r["flops"]["analytic"]
    assert 0.8 < ratio < 3.0, (r["src_len"], ratio)


def test_synthetic_batch_is_in_the_batchers_format():
  batch = bm.synthetic_batch(16, 10, 7, src_vocab=40, tgt_vocab=16, seed=3)
  again = bm.synthetic_batch(16, 10, 7, src_vocab=40, tgt_vocab=16, seed=3)
  for key, value in batch.items():
    np.testing.assert_array_equal(value, again[key])
  assert batch["src"].shape == (16, 10) and batch["tgt_in"].shape == (16, 7)
  assert batch["weights"].dtype == np.float32
  assert all(batch[k].dtype == np.int32 for k in ("src", "src_len", "tgt_in", "tgt_out"))
  assert batch["src_len"].min() >= 5 and batch["src_len"].max() <= 10
  assert batch["tgt_len"].min() >= math.ceil(7 / 2) and batch["tgt_len"].max() <= 7
  for row in range(16):
    n, tl = batch["src_len"][row], batch["tgt_len"][row]
    assert (batch["src"][row, :n] >= 4).all() and (batch["src"][row, n:] == PAD).all()
    assert batch["tgt_in"][row, 0] == BOS
    np.testing.assert_array_equal(batch["tgt_in"][row, 1:tl], batch["tgt_out"][row, :tl - 1])
    assert batch["tgt_out"][row, tl - 1] == EOS and (batch["tgt_out"][row, tl:] == PAD).all()
    assert (batch["tgt_in"][row, tl:] == PAD).all()
    assert batch["weights"][row].sum() == tl


@pytest.mark.parametrize("change,message", [
    (dict(models=("gru_bahdanau", "gru_attention")), "unknown model 'gru_attention'"),
    (dict(lengths=(16, 0)), "--lengths must be positive"),
    (dict(batch_sizes=()), "--batch_sizes must list"),
    (dict(sizes=dataclasses.replace(TINY_SIZES, d_model=18, heads=4)), "divisible"),
    (dict(sizes=dataclasses.replace(TINY_SIZES, tgt_vocab=4)), "--tgt_vocab must be > 4"),
    (dict(repeats=0), "--repeats must be positive"),
])
def test_bad_options_are_rejected_before_any_work(tmp_path, change, message):
  with pytest.raises(ConfigError, match=message):
    bm.run(tiny_options(tmp_path, **change), log=lambda line: None)
  assert not os.listdir(tmp_path)


def test_bad_model_name_exits_2_with_one_line():
  proc = subprocess.run(
      [sys.executable, "-m", "seq2seq_jax.benchmark", "--models=gru_bahdanau,nope"],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      f"error: --models: unknown model 'nope'; choose from {', '.join(bm.MODELS)}"]


def test_with_torch_times_the_pytorch_twins(tmp_path, tiny):
  pytest.importorskip("torch")
  del tiny  # run after the fixture: its JAX compilations are in the shared cache
  options = tiny_options(tmp_path, models=("gru_bahdanau", "lstm_plain", "transformer"),
                         lengths=(8,), decode=False, variants=False, with_torch=True,
                         torch_threads=1, repeats=3, rounds=3)
  results = bm.run(options, log=lambda line: None)
  assert results["machine"]["torch"]
  for r in results["points"]:
    assert r["status"] == "ok"
    t = r["torch"]
    assert t["status"] == "ok" and 0 < t["min_ms"] <= t["median_ms"] <= t["max_ms"]
    assert t["ratio"] == pytest.approx(t["median_ms"] / r["step"]["median_ms"])
    # In turns: 3 rounds of one timed step each, on both sides.
    assert len(t["round_medians_ms"]) == len(r["step"]["round_medians_ms"]) == 3
    assert len(t["times_ms"]) == len(r["step"]["times_ms"]) == 3
    # The twins are the same models: the same parameters, but for nn.LSTM's
    # second bias per gate (4 x hidden 16, in 1 encoder + 1 decoder layer).
    assert t["num_params"] - r["num_params"] == t["extra_params"]
    assert t["extra_params"] == (128 if r["model"] == "lstm_plain" else 0), r["label"]
    assert t["twin"].startswith("nn.Embedding"), r["label"]
  labels = {r["label"] for r in results["points"]}
  assert labels == {"gru_bahdanau", "lstm_plain", "transformer", "gru_bahdanau_h64_l1",
                    "transformer_dropout0.1"}
  small = next(r for r in results["points"] if r["label"] == "gru_bahdanau_h64_l1")
  assert [small["sizes"][k] for k in ("hidden", "layers", "decoder_layers")] == [64, 1, 1]
  goals = {g["goal"]: g for g in results["goals"]}
  measured = {"GRU + Bahdanau h256 (2+2 layers)", "GRU + Bahdanau h64 (1+1 layers)",
              "Transformer d256, dropout 0", "Transformer d256, dropout 0.1",
              "lstm_plain (every other model): ahead"}
  assert {name for name, g in goals.items() if g["measured"] is not None} == measured
  assert all(goals[name]["met"] in (True, False) for name in measured)
  assert goals["Transformer d256, dropout 0.1"]["measured"] == _torch_ratio(
      results, "transformer_dropout0.1")
  assert goals["GRU + Bahdanau h256 (2+2 layers)"]["note"] == (
      "measured at hidden 16, layers 1, decoder_layers 1")
  markdown = (tmp_path / "benchmark.md").read_text(encoding="utf-8")
  assert "## Goal points" in markdown and "x) |" in markdown
  assert "## PyTorch twins" in markdown and "| lstm_plain | nn.Embedding + 1-layer nn.LSTM" \
      in markdown
  assert "+128: nn.RNN/nn.LSTM's second bias per gate" in markdown


def _torch_ratio(results: dict, label: str) -> float:
  return next(r for r in results["points"] if r["label"] == label)["torch"]["ratio"]


def test_plan_merges_shared_points_and_caps_lengths():
  options = tiny_options("unused", lengths=(8, 16, 32), batch_sizes=(2, 4, 8),
                         capped_max_len=16).resolved()
  points = {(p.label, p.batch, p.src_len): p for p in bm.plan(options)}
  assert len(points) == 3 * (3 + 3 - 1)  # per model: 3 batches + 3 lengths, one point shared
  head = points[("gru_bahdanau", 4, 8)]  # date (8, 8) at batch 4 = the length-8 point
  assert sorted(head.sweeps) == ["batch", "date", "length"] and head.decode
  assert len(head.chains) == 2
  assert points[("lstm_plain", 4, 32)].capped and not points[("lstm_plain", 4, 16)].capped
  assert not points[("gru_bahdanau", 4, 16)].decode  # longer than --decode_max_len
  # No lengths: the date point and the batch sweep only.
  no_sweep = tiny_options("unused", lengths=()).resolved()
  bm.validate(no_sweep)
  assert [(p.label, p.sweeps) for p in bm.plan(no_sweep)] == [
      (m, ["date", "batch"]) for m in no_sweep.models]


def test_skip_rule_scales_the_previous_point_by_flops():
  rule = bm_sweep._SkipRule(limit=10.0, steps=5)
  chain = [("m", "length")]
  assert rule.check(chain, 100) == (None, None)  # nothing measured yet: run it
  rule.measured(chain, {"compile": {"lower_s": 0.5, "compile_s": 1.5},
                        "step": {"median_ms": 1000.0}}, 100)
  reason, estimate = rule.check(chain, 150)  # 2 s + 5 x 1.5 s
  assert reason is None and estimate == pytest.approx(9.5)
  reason, estimate = rule.check(chain, 200)  # 2 s + 5 x 2 s
  assert "estimated 12 s > --max_seconds_per_point=10" in reason
  reason, _ = rule.check(chain, 101)  # after a skip, the rest of the chain goes too
  assert reason.startswith("a smaller point of this sweep was skipped")
  assert rule.check([("m", "batch")], 10_000) == (None, None)  # other chains are not affected


def test_with_torch_without_torch_is_a_clear_error(tmp_path, monkeypatch):
  monkeypatch.setattr(bm_runner, "torch_version", lambda: None)
  with pytest.raises(UserError, match="--with_torch needs PyTorch"):
    bm.run(tiny_options(tmp_path, with_torch=True), log=lambda line: None)


def test_flags_reproduce_the_options():
  from absl import flags
  flag_values = flags.FlagValues()  # not absl's global FLAGS
  bm.define_flags(flag_values)
  options = tiny_options("/tmp/out dir").resolved()
  flag_values(["benchmark"] + options.to_argv())
  assert bm.options_from_flags(flag_values) == options
  flag_values(["benchmark", "--lengths=8,x"])
  with pytest.raises(ConfigError, match="--lengths must be comma-separated integers"):
    bm.options_from_flags(flag_values)


def test_goals_are_the_speed_issues_targets():
  assert [(g.goal, g.model, g.target, g.strict) for g in bm.GOALS] == [
      ("GRU + Bahdanau h256 (2+2 layers)", "gru_bahdanau", 2.0, False),
      ("GRU + Bahdanau h64 (1+1 layers)", "gru_bahdanau", 5.0, False),
      ("plain GRU h256 (2+2 layers)", "gru_plain", 1.5, False),
      ("Transformer d256, dropout 0", "transformer", 1.2, False),
      ("Transformer d256, dropout 0.1", "transformer", 1.2, False),
  ] + [(f"{m} (every other model): ahead", m, 1.0, True)
       for m in ("rnn_plain", "lstm_plain", "rnn_bahdanau", "lstm_bahdanau", "gru_luong")]
  assert {g.model for g in bm.GOALS} == set(bm.MODELS)
  # The default sizes are the targets' own: their points need no other sizes
  # but hidden 64 (1+1 layers) and the Transformer's other dropout.
  for g in bm.GOALS:
    assert all(getattr(bm.Sizes(), k) == v for k, v in g.sizes.items() if k not in g.point)
  assert (bm.Sizes().d_model, bm.Sizes().heads, bm.Sizes().d_ff) == (256, 4, 4 * 256)
  assert bm.build_model("transformer", bm.Sizes()).norm == "pre"
  assert bm.twin_sizes("transformer", bm.Sizes())["norm_first"] is True


def test_compute_goals_reads_each_target_at_its_point():
  sizes = dataclasses.asdict(bm.Sizes())
  options = {"sizes": sizes, "date": [32, 12], "batch_size": 64}

  def point(model, ratio, **changes):
    return {"model": model, "status": "ok", "batch": 64, "src_len": 32, "tgt_len": 12,
            "sizes": dict(sizes, **changes), "torch": {"status": "ok", "ratio": ratio}}

  points = [point("gru_bahdanau", 2.0), point("gru_bahdanau", 4.9, hidden=64, layers=1,
                                               decoder_layers=1),
            point("transformer", 1.3), point("transformer", 1.1, dropout=0.0),
            point("rnn_plain", 1.0), point("gru_luong", 1.01),
            dict(point("gru_plain", 9.0), batch=16)]  # not the date point's batch
  goals = {g["goal"]: g for g in bm.compute_goals({"options": options, "points": points})}
  met = {name: (g["measured"], g["met"]) for name, g in goals.items()}
  assert met == {
      "GRU + Bahdanau h256 (2+2 layers)": (2.0, True),  # at least 2x
      "GRU + Bahdanau h64 (1+1 layers)": (4.9, False),
      "plain GRU h256 (2+2 layers)": (None, None),
      "Transformer d256, dropout 0": (1.1, False),
      "Transformer d256, dropout 0.1": (1.3, True),
      "rnn_plain (every other model): ahead": (1.0, False),  # above 1x, not at
      "lstm_plain (every other model): ahead": (None, None),
      "rnn_bahdanau (every other model): ahead": (None, None),
      "lstm_bahdanau (every other model): ahead": (None, None),
      "gru_luong (every other model): ahead": (1.01, True),
  }
  assert all(g["note"] == "" for g in goals.values() if g["measured"] is not None)
  assert goals["plain GRU h256 (2+2 layers)"]["note"].startswith("not measured")
  table = bm_report._goals_table(list(goals.values()), markdown=True)
  assert "| rnn_plain (every other model): ahead | > 1.00x | 1.00x | no |  |" in table
  assert "| GRU + Bahdanau h256 (2+2 layers) | >= 2.00x | 2.00x | yes |  |" in table


def test_time_turns_alternates_the_calls_round_by_round():
  calls = []
  fns = {name: (lambda name=name: calls.append(name)) for name in ("jax", "torch")}
  times = bm.time_turns(fns, warmup=1, repeats=5, rounds=3)
  # Warm-ups first, then rounds of 2, 2 and 1 steps, the order reversed each round.
  assert calls == ["jax", "torch"] + ["jax"] * 2 + ["torch"] * 2 + ["torch"] * 2 + \
      ["jax"] * 2 + ["jax", "torch"]
  for t in times.values():
    assert len(t["times_ms"]) == 5 and len(t["round_medians_ms"]) == 3
    assert t["min_ms"] <= t["median_ms"] <= t["max_ms"]
  assert len(bm.time_turns(fns, 0, 2, rounds=3)["jax"]["round_medians_ms"]) == 2
  # settle: one untimed call opens every turn.
  calls.clear()
  times = bm.time_turns(fns, warmup=0, repeats=2, rounds=2, settle=1)
  assert calls == ["jax"] * 2 + ["torch"] * 2 + ["torch"] * 2 + ["jax"] * 2
  assert all(len(t["times_ms"]) == 2 for t in times.values())


# Sizes small enough for a quick step, with every part a twin must match:
# stacked encoder and decoder layers, dropout everywhere.
TWIN_SIZES = bm.Sizes(embed=8, hidden=16, layers=2, decoder_layers=2, attention_dim=8,
                      d_model=16, heads=2, transformer_layers=2, d_ff=32, dropout=0.1)


def _jax_params(model_name: str, sizes: bm.Sizes, batch: dict):
  model = bm.build_model(model_name, sizes, max_len=16)
  init = lambda: model.init(jax.random.key(0), batch["src"], batch["src_len"], batch["tgt_in"])
  return model, init


@pytest.mark.parametrize("model_name", bm.MODELS)
def test_each_twin_trains_one_step_with_our_parameter_count(model_name):
  pytest.importorskip("torch")
  from seq2seq_jax.benchmark import torch_twins
  batch = bm.synthetic_batch(4, 7, 5, TWIN_SIZES.src_vocab, TWIN_SIZES.tgt_vocab)
  twin = bm.twin_sizes(model_name, TWIN_SIZES)
  step, num_params = torch_twins.step_timer(model_name, twin, batch, threads=1)
  first, second = step(), step()
  assert math.isfinite(first) and math.isfinite(second) and first != second
  _, init = _jax_params(model_name, TWIN_SIZES, batch)
  ours = sum(x.size for x in jax.tree.leaves(jax.eval_shape(init)["params"]))
  # Equal, but for nn.RNN's and nn.LSTM's second bias per gate in each of
  # the 2 + 2 recurrent layers.
  gates = {"rnn": 1, "lstm": 4}.get(model_name.split("_")[0], 0)
  assert torch_twins.extra_params(model_name, twin) == gates * 16 * 4
  assert num_params == ours + gates * 16 * 4
  assert torch_twins.describe(model_name, twin)


def _rnn_state_dict(p: dict, cell: str, decoder: str, sizes: bm.Sizes, torch) -> dict:
  """Our RNNSeq2Seq's parameters under the twin's names (PyTorch keeps
  weights [out, in]; nn.RNN's and nn.LSTM's second bias is zero)."""
  t = lambda x: torch.from_numpy(np.array(x, np.float32))
  sd = {"encoder.embed.weight": t(p["src_embed"]["embedding"]),
        "tgt_embed.weight": t(p["tgt_embed"]["embedding"]),
        "out.weight": t(p["output"]["kernel"]).T, "out.bias": t(p["output"]["bias"])}

  def layer(prefix, suffix, q):
    sd.update({f"{prefix}weight_ih{suffix}": t(q["w_i"]).T,
               f"{prefix}weight_hh{suffix}": t(q["w_h"]).T,
               f"{prefix}bias_ih{suffix}": t(q["b_i"]),
               f"{prefix}bias_hh{suffix}": t(q["b_h"]) if "b_h" in q else 0 * t(q["b_i"])})

  for l in range(sizes.layers):
    layer("encoder.rnn.", f"_l{l}", p["encoder"][f"layer{l}_fwd"])
  for l in range(sizes.decoder_layers):
    q = p[f"decoder_layer{l}"]
    layer("decoder.", f"_l{l}", q) if decoder == "plain" else layer(f"cells.cells.{l}.", "", q)
  # The twin's bridge computes [h of every layer; c of every layer]; our
  # bridge{l}_0 makes an LSTM's c, bridge{l}_1 its h.
  parts = [1, 0] if cell == "lstm" else [0]
  bridges = [p[f"bridge{l}_{part}"] for part in parts for l in range(sizes.decoder_layers)]
  sd["bridge.proj.weight"] = torch.cat([t(b["kernel"]).T for b in bridges])
  sd["bridge.proj.bias"] = torch.cat([t(b["bias"]) for b in bridges])
  if decoder == "bahdanau":
    s = p["scorer"]
    sd.update({"w_query.weight": t(s["w_q"]).T, "w_key.weight": t(s["w_k"]).T,
               "w_key.bias": t(s["b_k"]), "v.weight": t(s["v"])[None, :]})
  if decoder == "luong":  # keys @ w.T is nn.Linear with weight w
    sd.update({"w_score.weight": t(p["scorer"]["w"]), "w_c.weight": t(p["w_c"]).T})
  return sd


def _transformer_state_dict(p: dict, sizes: bm.Sizes, torch) -> dict:
  """Our Transformer's parameters under nn.Transformer's names."""
  t = lambda x: torch.from_numpy(np.array(x, np.float32))
  d = sizes.d_model
  sd = {"src_embed.weight": t(p["src_embed"]["embedding"]),
        "tgt_embed.weight": t(p["tgt_embed"]["embedding"]),
        "out.weight": t(p["output"]["kernel"]).T, "out.bias": t(p["output"]["bias"])}
  dense = lambda name, q: sd.update({name + "weight": t(q["kernel"]).reshape(-1, d).T
                                     if q["kernel"].ndim == 3 else t(q["kernel"]).T,
                                     name + "bias": t(q["bias"])})
  norm = lambda name, q: sd.update({name + "weight": t(q["scale"]), name + "bias": t(q["bias"])})

  def attention(name, q):
    qkv = [q[k] for k in ("query", "key", "value")]
    sd[name + "in_proj_weight"] = torch.cat([t(x["kernel"]).reshape(d, d).T for x in qkv])
    sd[name + "in_proj_bias"] = torch.cat([t(x["bias"]).reshape(d) for x in qkv])
    dense(name + "out_proj.", q["out"])

  for i in range(sizes.transformer_layers):
    enc, dec = p[f"encoder_layers_{i}"], p[f"decoder_layers_{i}"]
    for side, q, attn in (("encoder", enc, {"self_attn": "self_attn"}),
                          ("decoder", dec, {"self_attn": "self_attn",
                                            "cross_attn": "multihead_attn"})):
      name = f"transformer.{side}.layers.{i}."
      for ours, theirs in attn.items():
        attention(f"{name}{theirs}.", q[ours])
      dense(name + "linear1.", q["ff"]["wi"])
      dense(name + "linear2.", q["ff"]["wo"])
      for n in range(1, len(attn) + 2):
        norm(f"{name}norm{n}.", q[f"norm{n}"])
  norm("transformer.encoder.norm.", p["encoder_norm"])
  norm("transformer.decoder.norm.", p["decoder_norm"])
  return sd


@pytest.mark.parametrize("model_name", bm.MODELS)
def test_each_twin_computes_our_function(model_name):
  """Given our parameters (and zero for PyTorch's redundant biases), the
  twin's logits are ours, without dropout: the same function."""
  torch = pytest.importorskip("torch")
  from seq2seq_jax.benchmark import torch_twins
  sizes = dataclasses.replace(TWIN_SIZES, dropout=0.0)
  batch = bm.synthetic_batch(3, 7, 5, sizes.src_vocab, sizes.tgt_vocab, seed=1)
  model, init = _jax_params(model_name, sizes, batch)
  variables = init()
  logits, _ = model.apply(variables, batch["src"], batch["src_len"], batch["tgt_in"])
  twin = torch_twins.make_model(model_name, bm.twin_sizes(model_name, sizes))
  p = variables["params"]
  if model_name == "transformer":
    state = _transformer_state_dict(p, sizes, torch)
    state["positions"] = twin.positions
  else:
    state = _rnn_state_dict(p, *bm.RNN_MODELS[model_name], sizes, torch)
  twin.load_state_dict(state)  # strict: every parameter of the twin is set
  twin.train()  # the training path, which the benchmark times (no dropout at rate 0)
  as_torch = lambda x: torch.from_numpy(np.asarray(x, np.int64))
  with torch.no_grad():
    theirs = twin(as_torch(batch["src"]), as_torch(batch["src_len"]), as_torch(batch["tgt_in"]))
  np.testing.assert_allclose(theirs.numpy(), np.asarray(logits), atol=2e-5, rtol=1e-5)
