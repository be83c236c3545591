"""The benchmark: a tiny sweep's reports, the FLOP count, flag errors.

Speed itself is never asserted (DESIGN.md): only that every number is there,
positive and consistent. The sweep is shrunk so the whole file stays well
under a minute on 2 cores: the date point coincides with the shortest length
point and the batch sweep with --batch_size, so each model compiles its train
step once or twice.
"""

import dataclasses
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from seq2seq_jax import benchmark as bm
from seq2seq_jax.data.tokenizers import BOS, EOS, PAD
from seq2seq_jax.errors import ConfigError, UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY_SIZES = bm.Sizes(embed=8, hidden=16, layers=1, attention_dim=8, d_model=16, heads=2,
                      transformer_layers=1, d_ff=32, dropout=0.0)


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
  assert saved["points"] == json.loads(json.dumps(bm._jsonable(results["points"])))
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
  with open(out_dir / "step_time_vs_length.png", "rb") as f:
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
  assert len(goals) == 4
  peak = next(g for g in goals if "matmul peak" in g["goal"])
  assert peak["measured"] == points[("gru_bahdanau", 8)]["flops"]["peak_fraction"]
  assert all(g["measured"] is None for g in goals if g["unit"] == "speed-up")  # no torch


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
  options = tiny_options(tmp_path, models=("gru_bahdanau", "transformer"), lengths=(8,),
                         decode=False, variants=False, with_torch=True, torch_threads=1)
  results = bm.run(options, log=lambda line: None)
  assert results["machine"]["torch"]
  for r in results["points"]:
    assert r["status"] == "ok"
    t = r["torch"]
    assert t["status"] == "ok" and 0 < t["min_ms"] <= t["median_ms"] <= t["max_ms"]
    assert t["ratio"] == pytest.approx(t["median_ms"] / r["step"]["median_ms"])
    # The twins are the same models: the same number of parameters.
    assert t["num_params"] == r["num_params"], r["label"]
  labels = {r["label"] for r in results["points"]}
  assert labels == {"gru_bahdanau", "transformer", "gru_bahdanau_h64_l1"}
  small = next(r for r in results["points"] if r["label"] == "gru_bahdanau_h64_l1")
  assert (small["sizes"]["hidden"], small["sizes"]["layers"]) == (64, 1)
  goals = results["goals"]
  assert all(g["measured"] is not None and g["met"] in (True, False) for g in goals)
  markdown = (tmp_path / "benchmark.md").read_text(encoding="utf-8")
  assert "## Goal point" in markdown and "x) |" in markdown


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


def test_skip_rule_scales_the_previous_point_by_flops():
  rule = bm._SkipRule(limit=10.0, steps=5)
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
  monkeypatch.setattr(bm, "torch_version", lambda: None)
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
