"""What every config field may hold, checked before a run does any work.

`validate(config)` raises `ConfigError` with one line naming the first bad
field and its allowed values; `train.py` prints it and exits with status 2.
"""

import numbers
from typing import Any, Callable

import ml_collections

from seq2seq_jax.data import batching
from seq2seq_jax.decoding import LENGTH_PENALTIES
from seq2seq_jax.data.tasks import TASKS
from seq2seq_jax.data.tokenizers import TOKENIZER_KINDS as TOKENIZERS
from seq2seq_jax.errors import ConfigError
from seq2seq_jax.parallel import STRATEGIES
from seq2seq_jax.training import PRECISIONS, SCHEDULED_SAMPLING
from seq2seq_jax.models import MODELS
from seq2seq_jax.models.attention import NORMALIZERS, SCORES
from seq2seq_jax.models.recurrent import CELLS, RECURRENCES
from seq2seq_jax.models.rnn_seq2seq import BRIDGES, DECODERS
from seq2seq_jax.models.transformer import NORMS, POSITIONALS

OPTIMIZERS = ("adam", "adamw")
DECAYS = ("cosine", "linear", "rsqrt", "constant")
TOO_LONG = ("error", "drop", "truncate")

# Fields that fix the shapes and meaning of the parameters: a checkpoint made
# with other values cannot be resumed (`resume_conflicts` says which of them
# a given model actually reads).
MODEL_FIELDS = ("model", "data.src_tokenizer", "data.tgt_tokenizer", "data.min_freq",
                "data.max_vocab", "data.shared_vocab", "data.spm_model_type",
                "data.spm_vocab_size", "data.cmudict_stress")
# Model fields that change how training runs, not the parameters or the
# function they compute (regularization, speed): a checkpoint resumes under
# other values.
TRAINING_ONLY_FIELDS = ("model.dropout", "model.transformer.attention_dropout",
                        "model.scan_unroll", "model.recurrence")
# Model fields that change the parameters' layout and were added after
# checkpoints first recorded their fields, with the value every older
# checkpoint has: compared as if recorded.
ADDED_MODEL_FIELDS = {"model.ensemble_size": 1}


def _fail(field: str, allowed: str, value: Any):
  raise ConfigError(f"config.{field} must be {allowed}; got {value!r}")


def one_of(*choices) -> Callable:
  def check(field, value):
    if value not in choices:
      _fail(field, "one of " + ", ".join(map(str, choices)), value)
  return check


def integer(lo: int, hi: int | None = None) -> Callable:
  def check(field, value):
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or value < lo or (hi is not None and value > hi):
      _fail(field, f"an integer >= {lo}" + (f" and <= {hi}" if hi is not None else ""), value)
  return check


def number(lo: float, hi: float, hi_open: bool = False, lo_open: bool = False) -> Callable:
  def check(field, value):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
      ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
      interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
      _fail(field, f"a number in {interval}", value)
  return check


def boolean(field, value):
  if not isinstance(value, bool):
    _fail(field, "True or False", value)


def boundaries(field, value):
  batching.parse_boundaries(value, f"config.{field}")


def source(field, value):
  kind, _, arg = str(value).partition(":")
  if kind == "builtin" and arg in TASKS:
    return
  if kind in ("tsv", "tfds") and arg:
    return
  if value == "cmudict":
    return
  _fail(field, f"'builtin:<task>' (tasks: {', '.join(TASKS)}), 'cmudict', 'tsv:<path>' or "
        "'tfds:<name>[/<config>]'", value)


def text(field, value):
  if not isinstance(value, str):
    _fail(field, "a string", value)


SCHEMA: dict[str, Callable] = {
    "seed": integer(0),
    "data.source": source,
    "data.seed": integer(0),
    "data.num_train": integer(1),
    "data.num_valid": integer(1),
    "data.num_test": integer(1),
    "data.min_len": integer(0),
    "data.max_len": integer(0),
    "data.valid_path": lambda f, v: None if isinstance(v, str) else _fail(f, "a path or ''", v),
    "data.test_path": lambda f, v: None if isinstance(v, str) else _fail(f, "a path or ''", v),
    # > 0: evaluation needs a non-empty valid and test split.
    "data.valid_fraction": number(0.0, 1.0, lo_open=True, hi_open=True),
    "data.test_fraction": number(0.0, 1.0, lo_open=True, hi_open=True),
    "data.cmudict_stress": boolean,
    "data.tfds_data_dir": text,
    "data.tfds_keys": text,
    "data.tfds_splits": text,
    "data.loader_threads": integer(0),
    "data.prefetch": integer(1),
    "data.spm_model_type": one_of("unigram", "bpe"),
    "data.spm_vocab_size": integer(8),
    "data.spm_max_sentences": integer(1),
    "data.src_tokenizer": one_of(*TOKENIZERS),
    "data.tgt_tokenizer": one_of(*TOKENIZERS),
    "data.min_freq": integer(1),
    "data.max_vocab": integer(0),
    "data.shared_vocab": boolean,
    "data.src_boundaries": boundaries,
    "data.tgt_boundaries": boundaries,
    "data.too_long": one_of(*TOO_LONG),
    "model.name": one_of(*MODELS),
    "model.embed_dim": integer(1),
    "model.dropout": number(0.0, 1.0, hi_open=True),
    "model.scan_unroll": integer(1),
    "model.recurrence": one_of(*RECURRENCES),
    "model.ensemble_size": integer(1),
    "model.bridge": one_of(*BRIDGES),
    "model.encoder.cell": one_of(*CELLS),
    "model.encoder.hidden": integer(1),
    "model.encoder.num_layers": integer(1),
    "model.encoder.bidirectional": boolean,
    "model.decoder.type": one_of(*DECODERS),
    "model.decoder.cell": one_of(*CELLS),
    "model.decoder.hidden": integer(1),
    "model.decoder.num_layers": integer(1),
    "model.decoder.input_feeding": boolean,
    "model.attention.score": one_of(*SCORES),
    "model.attention.normalize": one_of(*NORMALIZERS),
    "model.attention.topk": integer(1),
    "model.attention.dim": integer(1),
    "model.transformer.num_layers": integer(1),
    "model.transformer.d_model": integer(1),
    "model.transformer.num_heads": integer(1),
    "model.transformer.d_ff": integer(1),
    "model.transformer.attention_dropout": number(0.0, 1.0, hi_open=True),
    "model.transformer.norm": one_of(*NORMS),
    "model.transformer.positional": one_of(*POSITIONALS),
    "model.transformer.max_len": integer(1),
    "model.transformer.tie_output": boolean,
    "model.transformer.share_embeddings": boolean,
    "train.batch_size": integer(1),
    "train.grad_accum_steps": integer(1),
    "train.precision": one_of(*PRECISIONS),
    "train.num_steps": integer(1),
    "train.optimizer": one_of(*OPTIMIZERS),
    "train.learning_rate": number(0.0, 10.0, lo_open=True),
    "train.warmup_steps": integer(0),
    "train.decay": one_of(*DECAYS),
    "train.end_lr_factor": number(0.0, 1.0),
    "train.weight_decay": number(0.0, 1.0),
    "train.grad_clip_norm": number(0.0, float("inf")),
    "train.label_smoothing": number(0.0, 1.0, hi_open=True),
    "train.scheduled_sampling.schedule": one_of(*SCHEDULED_SAMPLING),
    "train.scheduled_sampling.k": number(0.0, float("inf")),
    "train.scheduled_sampling.c": number(0.0, float("inf")),
    "train.scheduled_sampling.eps_min": number(0.0, 1.0),
    "train.scheduled_sampling.predictions": one_of("argmax", "sample"),
    "train.log_every": integer(1),
    "train.eval_every": integer(1),
    "train.checkpoint_every": integer(1),
    "train.keep_checkpoints": integer(1),
    "train.ema_decay": number(0.0, 1.0, hi_open=True),
    "train.keep_best": boolean,
    "train.nonfinite": one_of("skip", "stop"),
    "train.progress_bar": boolean,
    "eval.batch_size": integer(1),
    "eval.max_decode_len": integer(0),
    "eval.beam_size": integer(1),
    "eval.alpha": number(0.0, 10.0),
    "eval.length_penalty": one_of(*LENGTH_PENALTIES),
    "eval.num_decode_examples": integer(0),
    "eval.num_samples": integer(0),
    "eval.num_attention_plots": integer(0),
    "parallel.strategy": one_of(*STRATEGIES),
    "parallel.coordinator_address": text,
    "parallel.num_processes": integer(0),
    "parallel.process_id": integer(-1),
}


def get_field(config, dotted: str):
  value = config
  for part in dotted.split("."):
    value = value[part]
  return value


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first missing or out-of-range field."""
  for field, check in SCHEMA.items():
    try:
      value = get_field(config, field)
    except (KeyError, AttributeError):
      raise ConfigError(f"config.{field} is missing (see seq2seq_jax/config_defaults.py)") from None
    check(field, value)
  model = config.model
  memory = model.encoder.hidden * (2 if model.encoder.bidirectional else 1)
  if (model.decoder.type != "plain" and model.attention.score in ("dot", "scaled_dot")
      and memory != model.decoder.hidden):
    raise ConfigError(
        f"config.model.attention.score={model.attention.score!r} compares decoder states with "
        f"encoder outputs, so config.model.decoder.hidden ({model.decoder.hidden}) must equal "
        f"the encoder output size ({memory} = encoder.hidden x directions); or use 'general'")
  if model.name == "transformer":
    t = model.transformer
    if t.d_model % t.num_heads:
      raise ConfigError(f"config.model.transformer.d_model ({t.d_model}) must be divisible by "
                        f"config.model.transformer.num_heads ({t.num_heads})")
    longest = max(batching.parse_boundaries(config.data.src_boundaries)[-1],
                  batching.parse_boundaries(config.data.tgt_boundaries)[-1],
                  config.eval.max_decode_len)
    if longest > t.max_len:
      raise ConfigError(f"config.model.transformer.max_len ({t.max_len}) must be at least the "
                        f"longest bucket or decode length ({longest})")
    if t.share_embeddings and not config.data.shared_vocab:
      raise ConfigError("config.model.transformer.share_embeddings needs "
                        "config.data.shared_vocab=True (one vocabulary for both sides)")
  ss = config.train.scheduled_sampling
  if model.ensemble_size > 1 and ss.schedule != "none":
    raise ConfigError(f"config.model.ensemble_size={model.ensemble_size} trains an ensemble with "
                      "teacher forcing only; set config.train.scheduled_sampling.schedule='none' "
                      "or config.model.ensemble_size=1")
  if ss.schedule == "exponential" and not ss.k < 1.0:
    raise ConfigError(f"config.train.scheduled_sampling.k must be < 1 for the exponential "
                      f"schedule k^i; got {ss.k}")
  if ss.schedule == "inverse_sigmoid" and ss.k < 1.0:
    raise ConfigError(f"config.train.scheduled_sampling.k must be >= 1 for the inverse "
                      f"sigmoid schedule k/(k+exp(i/k)); got {ss.k}")
  if ss.schedule in ("constant", "linear") and ss.k > 1.0:
    raise ConfigError(f"config.train.scheduled_sampling.k is a probability for the "
                      f"{ss.schedule} schedule and must be <= 1; got {ss.k}")
  data = config.data
  if data.shared_vocab and data.src_tokenizer != data.tgt_tokenizer:
    raise ConfigError("config.data.shared_vocab needs config.data.src_tokenizer == "
                      f"config.data.tgt_tokenizer; got {data.src_tokenizer!r} and "
                      f"{data.tgt_tokenizer!r}")
  if data.min_len and data.max_len and data.min_len > data.max_len:
    raise ConfigError(f"config.data.min_len ({data.min_len}) must not exceed "
                      f"config.data.max_len ({data.max_len})")
  if data.valid_fraction + data.test_fraction >= 1.0:
    raise ConfigError("config.data.valid_fraction + config.data.test_fraction must be < 1; got "
                      f"{data.valid_fraction} + {data.test_fraction}")
  train = config.train
  if train.batch_size % train.grad_accum_steps:
    # (The device count is known only at run time: DataParallel.check_batch_size.)
    raise ConfigError(f"config.train.batch_size ({train.batch_size}) must be divisible by "
                      f"config.train.grad_accum_steps ({train.grad_accum_steps})")
  par = config.parallel
  if par.num_processes > 1 and par.process_id >= par.num_processes:
    raise ConfigError(f"config.parallel.process_id ({par.process_id}) must be less than "
                      f"config.parallel.num_processes ({par.num_processes})")
  if config.train.warmup_steps >= config.train.num_steps and config.train.decay != "constant":
    raise ConfigError(f"config.train.warmup_steps ({config.train.warmup_steps}) must be less than "
                      f"config.train.num_steps ({config.train.num_steps}) unless decay is 'constant'")


def model_fields(config) -> dict:
  """The fields a checkpoint is tied to, flattened: {"model.encoder.cell": "gru", ...}."""
  out = {}

  def walk(prefix, value):
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      for k in sorted(value.keys()):
        walk(f"{prefix}.{k}", value[k])
    else:
      out[prefix] = value

  for field in MODEL_FIELDS:
    walk(field, get_field(config, field))
  return out


def reads(fields: dict, field: str) -> bool:
  """Whether the model that `fields` (a `model_fields` dict) describes
  depends on `field` for its parameters or the function they compute."""
  if field in TRAINING_ONLY_FIELDS:
    return False
  if field in ("data.spm_model_type", "data.spm_vocab_size"):
    return "sentencepiece" in (fields.get("data.src_tokenizer"), fields.get("data.tgt_tokenizer"))
  if not field.startswith("model.") or field == "model.name":
    return True
  name = fields.get("model.name")
  if name == "transformer":
    if field == "model.transformer.max_len":  # sinusoidal positions do not depend on it
      return fields.get("model.transformer.positional") == "learned"
    return field.startswith("model.transformer.")
  if name != "rnn_seq2seq":
    return True
  decoder = fields.get("model.decoder.type")
  if field.startswith("model.transformer.") or (
      decoder == "plain" and field.startswith("model.attention.")):
    return False
  if field == "model.decoder.input_feeding":
    return decoder == "luong"
  if field == "model.attention.topk":
    return fields.get("model.attention.normalize") == "topk"
  if field == "model.attention.dim":  # the tanh layer of these two scores
    return fields.get("model.attention.score") in ("additive", "concat")
  return True


def resume_conflicts(saved: dict, current: dict) -> list[str]:
  """The fields (sorted) that keep a checkpoint with `model_fields` `saved`
  from resuming under `current`: those its model reads, changed. Shapes,
  cells, score functions and normalizers count; dropout, speed settings and
  fields the model does not read (a Transformer's on an RNN, attention on a
  plain decoder) do not.

  Fields newer than the checkpoint are absent from `saved` and not compared:
  their defaults keep the old behaviour, and a non-default choice among them
  (say, a sentencepiece tokenizer) also changes a field the checkpoint
  recorded. The exceptions, fields that alone change the parameters' layout,
  are in ADDED_MODEL_FIELDS. Which fields the model reads is decided on the
  checkpoint's values (the newer fields at today's).
  """
  saved = {**ADDED_MODEL_FIELDS, **saved}
  model = {**current, **saved}
  return sorted(k for k in saved if saved[k] != current.get(k) and reads(model, k))
