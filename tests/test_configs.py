"""Every shipped config validates, builds its model and trains one step."""

import glob
import importlib
import os

import jax
import numpy as np
import pytest

from seq2seq_jax import config_schema, models, training
from seq2seq_jax.errors import ConfigError
from tests.train_steps import compiled_step, init_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                 if not p.endswith("__init__.py"))


@pytest.mark.parametrize("name", CONFIGS)
def test_config_validates_and_documents_its_command(name):
  module = importlib.import_module(f"configs.{name}")
  config = module.get_config()
  config_schema.validate(config)
  assert f"--config=configs/{name}.py" in module.__doc__


def test_every_default_field_has_a_comment():
  with open(os.path.join(ROOT, "seq2seq_jax", "config_defaults.py")) as f:
    lines = [l for l in f if " = " in l and l.strip().startswith(("config.", "data.", "model.",
                                                                   "train.", "ev."))]
  bare = [l.strip() for l in lines if "#" not in l and "ConfigDict()" not in l]
  assert not bare, bare


@pytest.mark.parametrize("name", CONFIGS)
def test_config_model_trains_a_step(name):
  config = importlib.import_module(f"configs.{name}").get_config()
  # The config's architecture at a tiny width: what is tested is the wiring.
  config.model.encoder.hidden = config.model.decoder.hidden = 8
  config.model.embed_dim = config.model.attention.dim = 4
  t = config.model.transformer
  t.num_layers, t.d_model, t.num_heads, t.d_ff = 1, 8, 2, 16
  model = models.build_model(config.model, 9, 7)
  cfg, rng = config.train, np.random.default_rng(0)
  rows = 2 * cfg.grad_accum_steps  # two per micro-batch
  batch = {"src": rng.integers(4, 9, (rows, 5)).astype(np.int32),
           "src_len": np.resize(np.array([5, 2], np.int32), rows),
           "tgt_in": rng.integers(4, 7, (rows, 4)).astype(np.int32),
           "tgt_out": rng.integers(4, 7, (rows, 4)).astype(np.int32),
           "weights": np.ones((rows, 4), np.float32)}
  # The step with the config's own training settings, as the trainer builds it.
  ss = cfg.scheduled_sampling
  scheduled = ss.schedule != "none"
  state = init_state(model, cfg, jax.random.key(0), batch)
  step = compiled_step(label_smoothing=cfg.label_smoothing, scheduled_sampling=scheduled,
                       sample_predictions=ss.predictions == "sample",
                       grad_accum_steps=cfg.grad_accum_steps, precision=cfg.precision)
  for i in range(3):
    gold_prob = np.float32(training.gold_probability(ss, i)) if scheduled else None
    state, metrics = step(state, batch, jax.random.key(1), gold_prob)
    assert np.isfinite(float(metrics["loss"])) and np.isfinite(float(metrics["grad_norm"]))
  assert int(state.step) == 3
  # The settings took effect: the objective is smoothed exactly when the
  # config smooths (the metric sums never are), float16 scales the loss,
  # scheduled sampling reports the share of gold tokens read.
  plain = float(metrics["loss_sum"]) / float(metrics["weight_sum"])
  assert (abs(float(metrics["loss"]) - plain) > 1e-6) == (cfg.label_smoothing > 0)
  assert ("loss_scale" in metrics) == (cfg.precision == "float16")
  assert ("gold_fraction" in metrics) == scheduled


@pytest.mark.parametrize("field,value,needle", [
    ("model.encoder.cell", "transformer", "config.model.encoder.cell must be one of rnn, gru, lstm"),
    ("model.encoder.hidden", -1, "config.model.encoder.hidden must be an integer >= 1"),
    ("model.encoder.num_layers", 0, "config.model.encoder.num_layers must be an integer >= 1"),
    ("model.dropout", 1.0, "config.model.dropout must be a number in [0.0, 1.0)"),
    ("model.decoder.type", "luong-ish", "config.model.decoder.type must be one of plain, bahdanau, luong"),
    ("model.attention.normalize", "entmax", "config.model.attention.normalize must be one of softmax, sparsemax, topk"),
    ("model.attention.score", "cosine", "config.model.attention.score must be one of additive, dot"),
    ("model.encoder.bidirectional", True, "config.model.attention.score='dot' compares decoder states"),
    ("data.source", "builtin:poetry", "config.data.source must be 'builtin:<task>'"),
    ("data.source", "csv:x", "config.data.source must be 'builtin:<task>'"),
    ("data.src_boundaries", "16,8", "config.data.src_boundaries must be strictly increasing"),
    ("train.optimizer", "sgd", "config.train.optimizer must be one of adam, adamw"),
    ("train.learning_rate", 0.0, "config.train.learning_rate must be a number in (0.0, 10.0]"),
    ("train.batch_size", 2.5, "config.train.batch_size must be an integer >= 1"),
    ("eval.length_penalty", "wu", "config.eval.length_penalty must be one of gnmt, normalize, none"),
    ("model.transformer.num_heads", 3, "config.model.transformer.d_model (128) must be divisible"),
])
def test_bad_values_name_the_field_and_allowed_values(field, value, needle):
  config = importlib.import_module("configs.default").get_config()
  if field == "model.encoder.bidirectional":  # dot scores need matching sizes
    config.model.attention.score = "dot"
  if field.startswith("model.transformer"):
    config.model.name = "transformer"
  *path, last = field.split(".")
  node = config
  for p in path:
    node = node[p]
  with node.ignore_type():
    node[last] = value
  with pytest.raises(ConfigError) as e:
    config_schema.validate(config)
  assert str(e.value).startswith(needle), str(e.value)
  assert "\n" not in str(e.value)


def test_readme_documents_every_config_field():
  config = importlib.import_module("configs.default").get_config()
  with open(os.path.join(ROOT, "README.md")) as f:
    readme = f.read()
  missing = [k for k in _flatten(config) if f"| `{k}` |" not in readme]
  assert not missing, f"README.md config table lacks {missing}"


def _flatten(node, prefix=""):
  for key, value in node.items():
    name = f"{prefix}{key}"
    if hasattr(value, "items"):
      yield from _flatten(value, name + ".")
    else:
      yield name


def test_an_ensemble_with_scheduled_sampling_is_refused():
  """An ensemble trains with teacher forcing only (its members' own losses)."""
  config = importlib.import_module("configs.default").get_config()
  config.model.ensemble_size = 2
  config_schema.validate(config)
  config.train.scheduled_sampling.schedule = "linear"
  with pytest.raises(ConfigError, match=r"^config.model.ensemble_size=2 trains an ensemble with "
                                        r"teacher forcing only"):
    config_schema.validate(config)
