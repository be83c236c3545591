"""train.py end to end on a tiny config: outputs, resume, and user errors.

The expensive part (a whole run) happens once per module and is shared.
"""

import copy
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from seq2seq_jax import compile_ahead, evaluation, trainer
from seq2seq_jax.checkpoints import Checkpoints
from seq2seq_jax.data import batching
from seq2seq_jax.errors import CheckpointError, ConfigError, DataError, LengthError
from seq2seq_jax.metric_writer import read_metrics
from tests import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train_py(*args, cwd=ROOT):
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"),
                         "--config=" + os.path.join(ROOT, "tests", "tiny_config.py"), *args],
                        cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


# The shared run keeps its best validation's parameters (train.keep_best), so
# the tests of translate and evaluate below check that every entry point
# reads those; the in-process runs cover the default (the last step's).
KEEP_BEST = "--config.train.keep_best=True"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """One complete tiny run through the real command line."""
  workdir = str(tmp_path_factory.mktemp("run"))
  proc = train_py(f"--workdir={workdir}", KEEP_BEST)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir, proc


def test_run_writes_the_workdir(trained):
  workdir, proc = trained
  for name in ("config.json", "src_tokenizer.json", "tgt_tokenizer.json", "metrics.jsonl",
               "samples.txt"):
    assert os.path.isfile(os.path.join(workdir, name)), name
  assert sorted(Checkpoints(os.path.join(workdir, "checkpoints")).all_steps()) == [4, 8]
  assert os.path.isfile(os.path.join(workdir, "attention", "step_8.png"))
  assert any(f.startswith("events") for f in os.listdir(os.path.join(workdir, "tensorboard")))
  events = read_metrics(workdir)
  assert {e["split"] for e in events} == {"data", "train", "valid", "test"}
  (data,) = read_metrics(workdir, "data")  # what reading the data cost, per split
  for split in ("train", "valid", "test"):
    r = data[split]
    assert r["examples"] > 0 and r["dropped"] == r["truncated"] == 0
    assert 0 <= r["src_unknown"] <= r["src_tokens"] and r["tgt_tokens"] > 0
  assert data["train"]["examples"] == 400 and "tokens mapped to <unk>: train 0/" in proc.stdout
  assert [e["step"] for e in events if e["split"] == "train"] == [2, 4, 6, 8]
  test = read_metrics(workdir, "test")[-1]
  assert 0.0 <= test["exact_match"] <= 1.0 and test["decoded_examples"] == 40
  # Bounded shapes: one train-step compile per bucket shape, no more.
  assert test["train_step_compilations"] == test["train_bucket_shapes"]
  # ... and besides them only the initializer, the eval step and the decoder
  # (compiled ahead of need, in worker threads: seq2seq_jax.compile_ahead).
  assert test["compilations_total"] == test["train_bucket_shapes"] + 3
  assert "exact match" in proc.stdout and "BLEU" in proc.stdout
  # keep_best: the test split was scored with the best validation's
  # parameters (exact match, then lower loss), kept as one checkpoint.
  valid = read_metrics(workdir, "valid")
  best = max(valid, key=lambda e: (e["exact_match"], -e["loss"]))
  assert [e["step"] for e in valid] == [4, 8] and test["best_step"] == best["step"]
  assert Checkpoints(os.path.join(workdir, "best")).all_steps() == [best["step"]]
  assert f"the best validation's parameters, step {best['step']}" in proc.stdout
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["model"]["encoder"]["hidden"] == 16


def test_keep_best_keeps_the_best_validation_across_restarts(tmp_path):
  """BestKept keeps the parameters of the highest validation exact match,
  ties going to the lower loss; a restarted run compares against what it
  kept, and its parameters come back as they were saved."""
  import types
  import jax.numpy as jnp

  def state(step):
    return types.SimpleNamespace(params={"w": jnp.full((3,), float(step))},
                                 opt_state={"m": jnp.zeros(2)}, step=jnp.int32(step))

  best = trainer.BestKept(str(tmp_path))
  assert best.params({"w": jnp.zeros(3)})[1] is None  # nothing kept yet
  best.offer({"exact_match": 0.5, "loss": 1.0}, state(1), 1)
  best.offer({"exact_match": 0.4, "loss": 0.5}, state(2), 2)  # worse match, better loss
  best.offer({"exact_match": 0.5, "loss": 0.9}, state(3), 3)  # a tie, lower loss
  best.close()
  best = trainer.BestKept(str(tmp_path))  # a restarted run
  best.offer({"exact_match": 0.5, "loss": 0.95}, state(4), 4)
  best.offer(None, state(5), 5)  # another process's view: it does not decide
  params, step = best.params({"w": jnp.zeros(3)})
  best.close()
  assert step == 3 and np.array_equal(np.asarray(params["w"]), np.full(3, 3.0))
  assert Checkpoints(str(tmp_path / "best")).all_steps() == [3]


def test_rerun_resumes_instead_of_retraining(trained):
  workdir, _ = trained
  before = len(read_metrics(workdir, "train"))
  proc = train_py(f"--workdir={workdir}", KEEP_BEST)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "resuming from step 8" in proc.stdout
  assert len(read_metrics(workdir, "train")) == before  # no step trained twice


def test_resume_gives_identical_parameters(tmp_path):
  config = tiny_config.get_config()
  config.train.num_steps = 6
  config.train.checkpoint_every = 100
  config.train.eval_every = 100
  config.eval.num_attention_plots = 0
  straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
  trainer.train_and_evaluate(copy.deepcopy(config), straight)
  assert trainer.train_and_evaluate(copy.deepcopy(config), split, stop_after=3) is None
  assert Checkpoints(os.path.join(split, "checkpoints")).latest_step() == 3
  trainer.train_and_evaluate(copy.deepcopy(config), split)

  def params(workdir):
    run = trainer.Run(copy.deepcopy(config), workdir)
    from seq2seq_jax import training
    state = training.create_train_state(run.model, config.train, jax.random.key(0),
                                        evaluation.model_batch(run.train_batches.batch_at(0)))
    return Checkpoints(run.ckpt_dir).restore(state)

  a, b = params(straight), params(split)
  assert int(a.step) == int(b.step) == 6
  for x, y in zip(jax.tree.leaves((a.params, a.opt_state)), jax.tree.leaves((b.params, b.opt_state))):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_an_ensemble_run_with_a_moving_average_evaluates_saves_and_resumes_with_it(tmp_path):
  """train.ema_decay, on a run of model.ensemble_size=2 (one model with two
  members_i): the test split is scored with the average; checkpoints hold it
  as `params` (what translate and evaluate read) and the trained parameters
  as `raw_params`, and both come back on resume; `load_workdir` gives the
  ensemble back. A resume that turns the average on or off, or changes the
  ensemble's size, is refused before anything is touched."""
  from seq2seq_jax import models, training
  from seq2seq_jax.checkpoints import restore_params
  from seq2seq_jax.inference import load_workdir
  config = tiny_config.get_config()
  config.train.update(num_steps=4, eval_every=100, checkpoint_every=100, ema_decay=0.5)
  config.model.ensemble_size = 2
  config.eval.num_attention_plots = 0
  workdir = str(tmp_path / "w")
  values = trainer.train_and_evaluate(copy.deepcopy(config), workdir)
  run = trainer.Run(copy.deepcopy(config), workdir)
  assert isinstance(run.model, models.Ensemble)
  first = evaluation.model_batch(run.train_batches.batch_at(0))
  state = Checkpoints(run.ckpt_dir).restore(
      training.create_train_state(run.model, config.train, jax.random.key(0), first))
  assert int(state.step) == 4 and state.ema_decay == 0.5
  assert max(float(np.abs(a - b).max()) for a, b in zip(
      jax.tree.leaves(state.params), jax.tree.leaves(state.ema_params))) > 1e-4
  saved, _ = restore_params(run.ckpt_dir, jax.eval_shape(lambda: state.params))
  for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(state.ema_params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  evaluate = training.jit_eval_step(run.model.apply)

  def test_loss(params):  # teacher-forced, over the whole test split
    sums = [evaluate(params, evaluation.model_batch(b))
            for b in run.held_out["test"].batches.iterate_epoch()]
    return training.summarize({k: sum(float(s[k]) for s in sums) for k in sums[0]})["loss"]

  assert values["loss"] == pytest.approx(test_loss(state.ema_params), rel=1e-5)
  assert values["loss"] != pytest.approx(test_loss(state.params), rel=1e-3)
  loaded = load_workdir(workdir)
  assert isinstance(loaded.model, models.Ensemble) and sorted(loaded.params) == [
      "members_0", "members_1"]
  assert len(loaded.translate(["jan 3 2244", "feb 1 1999"])) == 2
  before = sorted(os.listdir(run.ckpt_dir))
  larger = copy.deepcopy(config)
  larger.model.ensemble_size, larger.train.num_steps = 3, 6
  with pytest.raises(CheckpointError, match=r"different model \(model.ensemble_size: 2 -> 3\)"):
    trainer.train_and_evaluate(larger, workdir)
  with pytest.raises(CheckpointError, match=r"holds checkpoints trained with a moving average .*"
                                            r"train.ema_decay=0.0; resume with the setting"):
    config.train.update(ema_decay=0.0, num_steps=6)
    trainer.train_and_evaluate(copy.deepcopy(config), workdir)
  assert sorted(os.listdir(run.ckpt_dir)) == before


def test_every_test_example_is_scored_when_training_drops_long_ones(tmp_path):
  """data.too_long applies to training only: evaluation pads to a wider
  bucket and scores the whole valid and test split."""
  config = tiny_config.get_config()
  config.data.source = "builtin:reverse"  # letters, lengths 4 to 16
  config.data.src_boundaries = "10"
  config.data.tgt_boundaries = "11"  # targets + <eos>: strings of 11+ letters do not fit
  config.data.too_long = "drop"
  config.train.num_steps = 4
  config.train.eval_every = config.train.checkpoint_every = 4
  config.eval.num_attention_plots = 0
  values = trainer.train_and_evaluate(config, str(tmp_path))
  (data,) = read_metrics(str(tmp_path), "data")
  assert data["train"]["dropped"] > 0  # the condition under test holds
  run = trainer.Run(copy.deepcopy(config), str(tmp_path))
  test_pairs = run.splits["test"]
  assert max(len(src) for src, _ in test_pairs) > 10  # long test examples exist ...
  assert data["test"]["dropped"] == data["test"]["truncated"] == 0  # ... and are kept
  assert values["examples"] == len(test_pairs) == config.data.num_test
  assert values["decoded_examples"] == len({src for src, _ in test_pairs})
  (valid,) = read_metrics(str(tmp_path), "valid")
  assert valid["examples"] == config.data.num_valid
  # One decode-length rule for evaluation and translate.
  assert run.max_decode_len == batching.decode_length(0, config.data.tgt_boundaries) == 11


@pytest.mark.parametrize("override,needle", [
    ("--config.model.encoder.cell=transformer", "config.model.encoder.cell must be one of rnn, gru, lstm"),
    ("--config.model.decoder.hidden=-4", "config.model.decoder.hidden must be an integer >= 1"),
    ("--config.data.source=builtin:poetry", "config.data.source must be 'builtin:<task>'"),
])
def test_bad_config_values_are_refused_in_process(tmp_path, override, needle):
  config = tiny_config.get_config()
  field, value = override[len("--config."):].split("=")
  node = config
  parts = field.split(".")
  for p in parts[:-1]:
    node = node[p]
  node[parts[-1]] = type(node[parts[-1]])(value)
  with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace("'", "'")):
    trainer.train_and_evaluate(config, str(tmp_path / "w"))
  assert not os.path.exists(tmp_path / "w")


def test_a_bad_kernel_setting_fails_before_anything_is_written(tmp_path, monkeypatch):
  monkeypatch.setenv("SEQ2SEQ_JAX_CPU_KERNELS", "avx9")
  with pytest.raises(ConfigError, match="SEQ2SEQ_JAX_CPU_KERNELS='avx9'"):
    trainer.train_and_evaluate(tiny_config.get_config(), str(tmp_path / "w"))
  assert not os.path.exists(tmp_path / "w")


def test_data_errors(tmp_path):
  bad = tmp_path / "bad.tsv"
  bad.write_text("hello\tbonjour\n\nno tab here\n", encoding="utf-8")
  config = tiny_config.get_config()
  config.data.source = f"tsv:{bad}"
  with pytest.raises(DataError, match=f"{bad}:3: expected"):
    trainer.train_and_evaluate(config, str(tmp_path / "w"))
  config.data.source = f"tsv:{tmp_path / 'missing.tsv'}"
  with pytest.raises(DataError, match="missing.tsv"):
    trainer.train_and_evaluate(config, str(tmp_path / "w"))
  assert not os.path.exists(tmp_path / "w")


def test_command_line_errors_exit_2_without_traceback(trained, tmp_path):
  workdir, _ = trained
  proc = train_py(f"--workdir={tmp_path / 'w'}", "--config.model.encoder.cell=tanh")
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith("error: config.model.encoder.cell")
  assert "Traceback" not in proc.stderr and not os.path.exists(tmp_path / "w")
  proc = train_py(f"--workdir={tmp_path / 'w'}", "--config.model.encoder.size=3")
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert proc.stderr.startswith("error: no config field 'size'")

  # A workdir trained with another model is refused, and left as it was.
  snapshot = {name: open(os.path.join(workdir, name), "rb").read()
              for name in ("config.json", "metrics.jsonl", "src_tokenizer.json")}
  steps = Checkpoints(os.path.join(workdir, "checkpoints")).all_steps()
  proc = train_py(f"--workdir={workdir}", "--config.model.encoder.hidden=32")
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert "model.encoder.hidden: 16 -> 32" in proc.stderr
  for name, content in snapshot.items():
    assert open(os.path.join(workdir, name), "rb").read() == content, name
  assert Checkpoints(os.path.join(workdir, "checkpoints")).all_steps() == steps


def test_load_workdir_translates_like_the_run(trained):
  from seq2seq_jax.inference import load_workdir
  workdir, _ = trained
  loaded = load_workdir(workdir)
  assert loaded.step == 8
  with open(os.path.join(workdir, "samples.txt"), encoding="utf-8") as f:
    rows = [line.rstrip("\n").split("\t") for line in f][1:4]
  out = loaded.translate([src for src, _, _ in rows])
  # The same greedy outputs as the run's own test decoding (other padding).
  assert [o["hypothesis"] for o in out] == [hyp for _, hyp, _ in rows]
  for o in out:  # the tiny config's model has attention
    assert o["attention"].shape == (len(o["tgt_tokens"]), len(o["src_tokens"]))
  with pytest.raises(CheckpointError, match="has no trained model"):
    load_workdir(os.path.dirname(workdir))
  # Inference reads checkpoints through checkpoints.restore_params and
  # writes nothing: the workdir's files are as they were.
  listing = sorted(os.path.relpath(os.path.join(d, f), workdir)
                   for d, _, files in os.walk(workdir) for f in files)
  assert load_workdir(workdir, step=4).step == 4
  with pytest.raises(CheckpointError, match="has no checkpoint 5 "):
    load_workdir(workdir, step=5)
  assert sorted(os.path.relpath(os.path.join(d, f), workdir)
                for d, _, files in os.walk(workdir) for f in files) == listing


def test_translating_many_lines_compiles_once_per_batch_shape(trained):
  """320 lines: decoded in batches of fixed shapes (rows a power of two up to
  eval.batch_size, sources padded to a length bucket), so the compilations
  are at most one per distinct shape, none on a second call, and the outputs
  do not depend on which batch a line fell in."""
  from seq2seq_jax.inference import load_workdir
  workdir, _ = trained
  loaded = load_workdir(workdir)
  config = tiny_config.get_config()
  lines = [src for src, _ in trainer.Run(config, workdir).splits["train"][:320]]
  rows = config.eval.batch_size
  boundaries = batching.parse_boundaries(config.data.src_boundaries)
  shapes = {(rows, batching.eval_width((len(loaded.src_tok.encode(l)) for l in lines[i:i + rows]),
                                       boundaries))
            for i in range(0, len(lines), rows)}
  assert len(lines) // rows == 5  # several batches of the same shape
  before = compile_ahead.compilations()
  out = loaded.translate(lines)
  compiled = compile_ahead.compilations() - before
  assert 1 <= compiled <= len(shapes)
  again = loaded.translate(lines[::-1])  # 320 = 5 x 64: the same batches reversed
  assert compile_ahead.compilations() - before == compiled  # nothing new
  assert [o["hypothesis"] for o in again] == [o["hypothesis"] for o in out][::-1]
  single = loaded.translate(lines[:3])
  assert [o["hypothesis"] for o in single] == [o["hypothesis"] for o in out[:3]]


def test_evaluate_rescores_the_test_split_like_the_run(trained):
  from seq2seq_jax.evaluate import evaluate_decoders
  from seq2seq_jax.metric_writer import read_metrics
  workdir, _ = trained
  logged = read_metrics(workdir, "test")[-1]  # other tests may rerun on this workdir
  out = evaluate_decoders(workdir, "test", beam_sizes=(1, 2), repeats=1)
  greedy, beam = out["results"]
  # The run decoded its test split greedily too: the same split, the same scores.
  assert out["examples"] == logged["decoded_examples"]
  assert greedy["exact_match"] == logged["exact_match"]
  assert greedy["bleu"] == pytest.approx(logged["bleu"])
  assert beam["beam_size"] == 2 and 0.0 <= beam["exact_match"] <= 1.0
  assert greedy["sentences_per_s"] > 0 and greedy["compile_s"] > 0


def test_an_ensemble_of_workdirs_decodes_as_one_model(trained, tmp_path):
  """`load_ensemble` and `evaluate --ensemble`: a workdir ensembled with
  itself decodes exactly as it does alone (the mean of equal log-softmaxes
  is the log-softmax); workdirs whose tokenizers differ are one clear
  error, exit 2 from the command, before anything is decoded."""
  import shutil

  from seq2seq_jax import models
  from seq2seq_jax.data import tokenizers
  from seq2seq_jax.evaluate import evaluate_decoders
  from seq2seq_jax.inference import load_ensemble, load_workdir
  workdir, _ = trained
  alone, both = load_workdir(workdir), load_ensemble([workdir, workdir])
  assert isinstance(both.model, models.Ensemble) and both.step == alone.step
  with open(os.path.join(workdir, "samples.txt"), encoding="utf-8") as f:
    lines = [line.split("\t")[0] for line in f][1:6]
  for beam in (1, 2):
    assert ([o["hypothesis"] for o in both.translate(lines, beam_size=beam)]
            == [o["hypothesis"] for o in alone.translate(lines, beam_size=beam)])
  logged = read_metrics(workdir, "test")[-1]
  out = evaluate_decoders(workdir, "test", beam_sizes=(1,), repeats=1, ensemble=[workdir])
  assert out["examples"] == logged["decoded_examples"]
  assert out["results"][0]["exact_match"] == logged["exact_match"]

  other = str(tmp_path / "other")
  shutil.copytree(workdir, other)
  tokenizers.make_tokenizer("char", ["xyz"]).save(os.path.join(other, "tgt_tokenizer.json"))
  with pytest.raises(CheckpointError, match="their target tokenizers differ"):
    load_ensemble([workdir, other])
  proc = subprocess.run([sys.executable, "-m", "seq2seq_jax.evaluate", f"--workdir={workdir}",
                         f"--ensemble={other}", "--beam_sizes=1", "--repeats=1"],
                        cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith(f"error: cannot decode {workdir} and "
                                                         f"{other} as one ensemble")


@pytest.fixture(scope="module")
def transformer_workdir(tmp_path_factory):
  """An untrained Transformer with 16 positions, written as train.py writes a
  workdir (config, tokenizers, a checkpoint): its outputs are noise, what is
  tested is how it takes lengths."""
  from seq2seq_jax import models, training
  from seq2seq_jax.data import tokenizers
  workdir = str(tmp_path_factory.mktemp("transformer"))
  config = tiny_config.get_config()
  config.model.name = "transformer"
  config.model.transformer.update(num_layers=1, d_model=8, num_heads=2, d_ff=8, max_len=16)
  config.data.src_boundaries, config.data.tgt_boundaries = "16", "12"
  with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
    f.write(config.to_json_best_effort())
  tok = tokenizers.make_tokenizer("char", ["abc"])
  for side in ("src", "tgt"):
    tok.save(os.path.join(workdir, f"{side}_tokenizer.json"))
  model = models.build_model(config.model, len(tok.vocab), len(tok.vocab))
  dummy = np.ones((1, 1), np.int32)
  state = training.create_train_state(model, config.train, jax.random.key(0),
                                      {"src": dummy, "src_len": np.ones(1, np.int32),
                                       "tgt_in": dummy})
  ckpts = Checkpoints(os.path.join(workdir, "checkpoints"))
  ckpts.save(state, {})
  ckpts.close()
  return workdir


POSITIONS = " needs more than the Transformer's 16 positions (config.model.transformer.max_len)"


def test_translate_refuses_lengths_past_transformer_positions(transformer_workdir):
  from seq2seq_jax.inference import load_workdir
  trained = load_workdir(transformer_workdir)
  # All 16 positions, in and out; an empty input stays empty.
  out = trained.translate(["abca" * 4, "", "ab"], max_len=16)
  assert out[0]["attention"].shape[-1] == 16 and len(out[0]["tgt_tokens"]) <= 16
  assert out[1]["hypothesis"] == "" and out[1]["tgt_tokens"] == []
  with pytest.raises(LengthError) as error:
    trained.translate(["ab", "abc" * 6], max_len=4)
  assert str(error.value) == "the input 'abcabcabcabcabcabc' (18 tokens)" + POSITIONS
  for beam_size in (1, 2):
    with pytest.raises(LengthError) as error:
      trained.translate(["ab"], max_len=17, beam_size=beam_size)
    assert str(error.value) == "decoding up to max_len=17 tokens" + POSITIONS


@pytest.mark.parametrize("args,text,message", [
    ([], "ab\n" + "c" * 20 + "\n", "the input 'cccccccccccccccccccc' (20 tokens)"),
    (["--max_len=17", "--beam_size=2"], "ab\n", "decoding up to max_len=17 tokens"),
])
def test_translate_command_refuses_lengths_past_transformer_positions(
    transformer_workdir, args, text, message):
  env = dict(os.environ, PYTHONPATH=ROOT)
  proc = subprocess.run([sys.executable, "-m", "seq2seq_jax.translate",
                         f"--workdir={transformer_workdir}", *args], input=text, cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 2 and proc.stdout == ""
  assert proc.stderr == "error: " + message + POSITIONS + "\n"  # one line, no traceback


def test_translate_command(trained, tmp_path):
  workdir, _ = trained
  env = dict(os.environ, PYTHONPATH=ROOT)
  png = str(tmp_path / "a.png")
  proc = subprocess.run(
      [sys.executable, "-m", "seq2seq_jax.translate", f"--workdir={workdir}", "--beam_size=2",
       f"--attention_png={png}"],
      input="3 mar. 2020\ntuesday, march 3 2020 ✓\n\n" + "march 3 2020 " * 40 + "\n",
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = proc.stdout.split("\n")
  assert len(lines) == 5 and lines[2] == "" and lines[4] == ""  # one line per input
  assert "input 2: 1 token(s) not in the vocabulary" in proc.stderr  # the check mark
  assert "input 3: empty" in proc.stderr
  assert os.path.getsize(png) > 0
  proc = subprocess.run([sys.executable, "-m", "seq2seq_jax.translate",
                         f"--workdir={tmp_path}", "x"], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 2 and "has no trained model" in proc.stderr


@pytest.mark.parametrize("xdg", ["", "set"])
def test_the_default_compilation_cache_follows_xdg_cache_home(tmp_path, xdg):
  env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", "HOME")}
  env.update(PYTHONPATH=ROOT, HOME=str(tmp_path / "home"))
  if xdg:
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
  out = subprocess.run([sys.executable, "-c", "import train; print(train.FLAGS['compilation_cache'].default)"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  expected = (os.path.join(str(tmp_path / "xdg"), "seq2seq_jax", "xla") if xdg
              else os.path.join("~", ".cache", "seq2seq_jax", "xla"))
  assert out.stdout.strip() == expected
