"""What a benchmark run measures: the models, their sizes, the sweep options and presets."""

import dataclasses
import os
from typing import Optional

import jax
import numpy as np

from seq2seq_jax.errors import ConfigError


# name -> (cell, decoder) for the recurrent models; "transformer" is the other.
RNN_MODELS = {
    "rnn_plain": ("rnn", "plain"),
    "gru_plain": ("gru", "plain"),
    "lstm_plain": ("lstm", "plain"),
    "rnn_bahdanau": ("rnn", "bahdanau"),
    "gru_bahdanau": ("gru", "bahdanau"),
    "lstm_bahdanau": ("lstm", "bahdanau"),
    "gru_luong": ("gru", "luong"),
}
MODELS = tuple(RNN_MODELS) + ("transformer",)
TORCH_MAX_LEN = 1024  # positions of torch_twins's Transformer
FIRST_TOKEN = 4  # ids below are <pad>, <bos>, <eos>, <unk>

# Defaults that depend on the machine; an explicit flag overrides each.
PRESETS = {
    "cpu": dict(lengths=(16, 32, 64, 128, 256), batch_size=64, batch_sizes=(16, 64, 256),
                capped_max_len=64, max_seconds_per_point=90.0),
    "gpu": dict(lengths=(16, 32, 64, 128, 256, 512), batch_size=64,
                batch_sizes=(16, 64, 256, 1024), capped_max_len=0, max_seconds_per_point=120.0),
}
CAPPED_MODELS = ("rnn_plain", "rnn_bahdanau", "lstm_plain", "lstm_bahdanau")


# -- options --------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Sizes:
  """Model sizes. The recurrent models use embed, hidden (encoder and
  decoder), layers (encoder), decoder_layers and attention_dim; the
  Transformer d_model, heads, transformer_layers (encoder and decoder each)
  and d_ff."""
  embed: int = 64
  hidden: int = 256
  layers: int = 2
  decoder_layers: int = 2
  attention_dim: int = 128
  d_model: int = 256
  heads: int = 4
  transformer_layers: int = 2
  d_ff: int = 1024
  dropout: float = 0.1
  src_vocab: int = 40
  tgt_vocab: int = 16


@dataclasses.dataclass(frozen=True)
class Options:
  """Everything a run depends on; the command-line flags map one to one
  (`to_argv`). None means "from the preset"."""
  models: tuple = MODELS
  preset: str = "auto"  # "cpu", "gpu", or "auto": "cpu" on the CPU backend, else "gpu"
  lengths: Optional[tuple] = None
  batch_size: Optional[int] = None
  batch_sizes: Optional[tuple] = None
  date: tuple = (32, 12)  # (source, target) lengths of the headline point
  sizes: Sizes = Sizes()
  warmup: int = 3
  repeats: int = 10
  decode: bool = True
  decode_max_len: int = 64
  decode_repeats: int = 3
  beam_size: int = 4
  variants: bool = True
  variant_batch: int = 64
  variant_length: int = 32
  variant_unrolls: tuple = (1, 2, 4, 8)
  max_seconds_per_point: Optional[float] = None
  capped_models: tuple = CAPPED_MODELS
  capped_max_len: Optional[int] = None  # 0 = no cap
  matmul_sizes: tuple = (512, 1024, 2048)
  with_torch: bool = False
  rounds: int = 3  # JAX and PyTorch take turns at a point in this many rounds
  torch_threads: int = os.cpu_count() or 1
  goals: bool = True
  seed: int = 0
  out_dir: str = "benchmark_out"

  def resolved(self) -> "Options":
    """The options with the preset's defaults filled in."""
    preset = self.preset
    if preset == "auto":
      preset = "cpu" if jax.default_backend() == "cpu" else "gpu"
    if preset not in PRESETS:
      raise ConfigError(f"--preset must be one of auto, {', '.join(PRESETS)}, got {preset!r}")
    fill = {k: v for k, v in PRESETS[preset].items() if getattr(self, k) is None}
    return dataclasses.replace(self, preset=preset, **fill)

  def to_argv(self) -> list:
    """Flags that reproduce these options exactly."""
    argv = []
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      items = dataclasses.asdict(value).items() if f.name == "sizes" else [(f.name, value)]
      for name, v in items:
        if v is None:
          continue
        if isinstance(v, (tuple, list)):
          v = ",".join(str(x) for x in v)
        elif isinstance(v, bool):
          v = str(v).lower()
        argv.append(f"--{name}={v}")
    return argv


def validate(options: Options) -> None:
  """Raises ConfigError naming the first bad value (checked before any work)."""
  def positive_ints(name, values, empty_ok=False):
    if not values and not empty_ok:
      raise ConfigError(f"--{name} must list at least one value")
    for v in values:
      if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
        raise ConfigError(f"--{name} must be positive integers, got {v!r}")

  o = options
  if not o.models:
    raise ConfigError(f"--models must name at least one of {', '.join(MODELS)}")
  for name, group in (("models", o.models), ("capped_models", o.capped_models)):
    for m in group:
      if m not in MODELS:
        raise ConfigError(f"--{name}: unknown model {m!r}; choose from {', '.join(MODELS)}")
  if len(set(o.models)) != len(o.models):
    raise ConfigError(f"--models lists a model twice: {','.join(o.models)}")
  positive_ints("lengths", o.lengths, empty_ok=True)  # none: no length sweep
  positive_ints("batch_sizes", o.batch_sizes)
  positive_ints("batch_size", [o.batch_size])
  if len(o.date) != 2:
    raise ConfigError(f"--date must be two lengths, source,target; got {o.date!r}")
  positive_ints("date", o.date)
  positive_ints("matmul_sizes", o.matmul_sizes)
  s = o.sizes
  for name in ("embed", "hidden", "layers", "decoder_layers", "attention_dim", "d_model",
               "heads", "transformer_layers", "d_ff"):
    positive_ints(name, [getattr(s, name)])
  if s.d_model % s.heads:
    raise ConfigError(f"--d_model ({s.d_model}) must be divisible by --heads ({s.heads})")
  if not 0.0 <= s.dropout < 1.0:
    raise ConfigError(f"--dropout must be in [0, 1), got {s.dropout}")
  for name in ("src_vocab", "tgt_vocab"):
    if getattr(s, name) <= FIRST_TOKEN:
      raise ConfigError(f"--{name} must be > {FIRST_TOKEN} (ids 0-3 are special tokens), "
                        f"got {getattr(s, name)}")
  positive_ints("repeats", [o.repeats])
  positive_ints("decode_repeats", [o.decode_repeats])
  positive_ints("beam_size", [o.beam_size])
  positive_ints("variant_batch", [o.variant_batch])
  positive_ints("variant_length", [o.variant_length])
  positive_ints("variant_unrolls", o.variant_unrolls)
  positive_ints("torch_threads", [o.torch_threads])
  positive_ints("rounds", [o.rounds])
  for name in ("warmup", "decode_max_len", "capped_max_len"):
    if getattr(o, name) < 0:
      raise ConfigError(f"--{name} must be >= 0, got {getattr(o, name)}")
  if not o.max_seconds_per_point > 0:
    raise ConfigError(f"--max_seconds_per_point must be > 0, got {o.max_seconds_per_point}")


def torch_version() -> Optional[str]:
  """PyTorch's version, or None when it cannot be imported."""
  try:
    import torch  # noqa: PLC0415  (optional; only --with_torch needs it)
  except ImportError:
    return None
  return torch.__version__
