"""Training and decoding speed of the models: scan RNNs against attention.

  python -m seq2seq_jax.benchmark                      # all models, CPU preset
  python -m seq2seq_jax.benchmark --models=gru_bahdanau,transformer --with_torch
  python -m seq2seq_jax.benchmark --preset=gpu --out_dir=benchmark_gpu

Writes to --out_dir (default `benchmark_out`): `benchmark.json` (everything),
`benchmark.md` (tables, with the command, machine and date on top) and
`date_point.png` and `step_time_vs_length.png`; prints the same tables on the terminal.

What is measured, for each model at each point (batch B, source length S,
target length T) on synthetic batches in the batcher's exact format:

* compile time of the real train step (`training.step_function`, jitted with
  the state donated, as `training.jit_train_step` does): `lower` and
  `compile` separately;
* step time after --warmup steps, --repeats times, each call ended by
  `jax.block_until_ready`: min / median / max ms, and target tokens per
  second (real target tokens, i.e. the sum of `weights`, over the median);
* FLOPs per train step, counted analytically (`analytic_flops`: matmuls only,
  2*m*n*k, over the padded lengths that are computed, forward x 3 for
  forward + backward), the FLOP/s this achieves and its fraction of the
  machine's matmul peak, measured at start-up (`measure_matmul_peak`). XLA's
  own count (`compiled.cost_analysis()`) is recorded beside it as a
  cross-check; it counts the body of a loop (`lax.scan`, `while_loop`) once,
  not once per time step, so for recurrent models it is far below the
  analytic count, while for the Transformer (no loop) the two agree up to
  the elementwise work XLA also counts;
* memory: the device's `peak_bytes_in_use` where the backend reports it
  (GPU, TPU: the process-wide peak so far, not per point), otherwise the
  process's peak RSS (`ru_maxrss`, also process-wide) and current RSS; and
  per point XLA's `memory_analysis()` of the compiled step (temp + argument +
  output bytes);
* decoding throughput in sentences/s, greedy and beam --beam_size
  (`decoding.jit_decode`, compiled first and timed separately, median of
  --decode_repeats). Only at the headline date point and on length points
  up to --decode_max_len, to bound the time. The models are untrained, so a
  row stops when it happens to emit <eos>: the loop iterations run are
  recorded (`steps`) beside the throughput.

Sweeps:
* the date point (--date, source 32 and target 12 like the built-in date
  task) at --batch_size: the headline table;
* lengths (--lengths, S = T = L) at --batch_size (--lengths= for none);
* batch sizes (--batch_sizes) at the date point.
--preset sets the defaults of the lengths, batch sizes, cap and time limit
below: "cpu" (lengths 16-256, batches 16,64,256), "gpu" (lengths 16-512,
batches 16-1024, no cap) or "auto" (the default: "cpu" on JAX's CPU backend,
else "gpu"); an explicit flag wins. A point is skipped (recorded with the
reason) when its estimated time, the previous point of the same sweep
scaled by the ratio of analytic FLOPs, exceeds --max_seconds_per_point;
the longer points of that sweep are then skipped too. The CPU preset also
caps the rnn_* and lstm_* models (--capped_models) at lengths <=
--capped_max_len (64): the GRU models and the Transformer carry the
long-sequence comparison, and every point costs compilations (a train step,
its initialization and, where decoded, greedy and beam search: several
seconds each on 2 cores), which dominate a CPU run. With these defaults a
run of all models takes roughly a quarter of an hour on a 2-core machine
(more with --with_torch, which times every model's twin at every point);
--decode_max_len, --lengths and --models shorten it.

Recurrence variants (--variants): one GRU encoder layer (--variant_batch x
--variant_length, --embed inputs, --hidden units), forward + backward
(`jax.grad` of the sum of the outputs with respect to parameters and
inputs): `recurrent.run_layer` at several `unroll`s; the same layer as
`flax.linen.RNN(nn.GRUCell)` (`nn.scan` inside, input projection inside the
step) against our hand-written scan (input projection hoisted); and, on a GPU
only, cuDNN's LSTM (`jax.experimental.rnn`) against our LSTM layer.

--with_torch times, at every point, the PyTorch twin of each model
(`bench_torch`, `bench_torch_rnn`: the same function written the way PyTorch
users write it; the report describes each in a line) on the same NumPy
batches, and reports torch / jax (above 1: JAX is faster) and both parameter
counts. The two are timed in turns, since a shared machine's speed drifts:
after their warm-ups, --rounds rounds of each side's share of --repeats
steps, the order swapped every round; the median is over all timed steps.
PyTorch is imported only then, and stays optional. --goals compares the
results with the speed issue's targets (`GOALS`; reported, never
asserted); with --with_torch it adds the points the targets name beside the
headline: GRU+Bahdanau with hidden 64 and 1+1 layers, and the Transformer at
dropout 0 and 0.1.

The default sizes are the targets': RNNs embed 64, hidden 256, 2 encoder + 2
decoder layers, attention 128; Transformer d_model 256, 4 heads, 2+2 layers,
FFN 4x; dropout 0.1. The date point, (32, 12) at batch 64 with vocabularies
40/16, is the built-in date task's largest length bucket (its sources are
up to 28 characters, padded to 32; its targets 10 characters + <eos>, padded
to 12) and its character vocabularies.
"""

import dataclasses
import datetime
import json
import math
import os
import platform
import resource
import shlex
import sys
import time
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from seq2seq_jax import decoding, training
from seq2seq_jax.data import batching
from seq2seq_jax.errors import ConfigError, UserError
from seq2seq_jax.models import recurrent
from seq2seq_jax.models.rnn_seq2seq import RNNSeq2Seq
from seq2seq_jax.models.transformer import Transformer

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
TORCH_MAX_LEN = 1024  # positions of bench_torch's Transformer
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


# -- synthetic batches ------------------------------------------------------------

def synthetic_batch(batch_size: int, src_len: int, tgt_len: int, src_vocab: int,
                    tgt_vocab: int, seed: int = 0) -> dict:
  """A batch in `data.batching`'s format, deterministic in its arguments.

  Source lengths and target lengths (`tgt_len`: target tokens + <eos>) are
  uniform in [ceil(L/2), L]; tokens uniform in [4, vocab). Every model (and
  PyTorch) sees the same batch at the same point.

  Returns NumPy arrays: src int32 [B, S], src_len int32 [B], tgt_in int32
  [B, T] (<bos> + target), tgt_out int32 [B, T] (target + <eos>), tgt_len
  int32 [B], weights float32 [B, T] (1 on real target positions), index
  int32 [B].
  """
  b, s, t = batch_size, src_len, tgt_len
  rng = np.random.default_rng([seed, b, s, t])
  src_lens = rng.integers(math.ceil(s / 2), s + 1, size=b)
  tgt_lens = rng.integers(math.ceil(t / 2), t + 1, size=b)
  src = rng.integers(FIRST_TOKEN, src_vocab, size=(b, s))
  target = rng.integers(FIRST_TOKEN, tgt_vocab, size=(b, t))
  # The batcher's own filling: <bos>/<eos>, padding and weights as in training.
  rows = ((src[i, :src_lens[i]], target[i, :tgt_lens[i] - 1], i) for i in range(b))
  return batching.fill_batch((s, t), b, rows)


# -- models ---------------------------------------------------------------------

def build_model(name: str, sizes: Sizes, max_len: int = 256):
  """The model called `name` (see MODELS). max_len: the Transformer's
  positions and decode cache (at least the longest source or target)."""
  if name == "transformer":
    return Transformer(src_vocab_size=sizes.src_vocab, tgt_vocab_size=sizes.tgt_vocab,
                       num_layers=sizes.transformer_layers, d_model=sizes.d_model,
                       num_heads=sizes.heads, d_ff=sizes.d_ff, dropout=sizes.dropout,
                       max_len=max_len)
  cell, decoder = RNN_MODELS[name]
  return RNNSeq2Seq(src_vocab_size=sizes.src_vocab, tgt_vocab_size=sizes.tgt_vocab,
                    embed_dim=sizes.embed, encoder_cell=cell, encoder_hidden=sizes.hidden,
                    encoder_layers=sizes.layers, bidirectional=False, decoder=decoder,
                    decoder_cell=cell, decoder_hidden=sizes.hidden,
                    decoder_layers=sizes.decoder_layers,
                    attention_score="general" if decoder == "luong" else "additive",
                    attention_dim=sizes.attention_dim, dropout=sizes.dropout)


def optimizer_config() -> ml_collections.ConfigDict:
  """What `training.create_train_state` needs: Adam after clipping to norm 1
  (the defaults of configs/default.py, and what bench_torch's models use)."""
  return ml_collections.ConfigDict(dict(
      optimizer="adam", learning_rate=1e-3, warmup_steps=10, num_steps=1000, decay="cosine",
      end_lr_factor=0.05, grad_clip_norm=1.0, weight_decay=0.0, precision="float32"))


def twin_sizes(name: str, sizes: Sizes) -> dict:
  """The `sizes` of `bench_torch.make_model`: ours, and our Transformer's
  normalization, which its twin follows."""
  norm_first = build_model(name, sizes).norm == "pre" if name == "transformer" else None
  return dict(dataclasses.asdict(sizes), norm_first=norm_first)


# -- FLOPs ----------------------------------------------------------------------

def _mm(m: int, k: int, n: int) -> int:
  """FLOPs of an [m, k] x [k, n] matmul (a multiply and an add each)."""
  return 2 * m * k * n


def _rnn_forward_flops(cell: str, decoder: str, s: Sizes, b: int, src: int, tgt: int) -> int:
  """Matmul FLOPs of RNNSeq2Seq's teacher-forced forward pass (see build_model)."""
  gh = recurrent.num_gates(cell) * s.hidden  # all gates side by side
  h, e = s.hidden, s.embed
  flops = 0
  # Encoder: each layer's input projection for all steps at once, then the
  # recurrence h @ w_h at every (padded) step.
  for layer in range(s.layers):
    flops += _mm(b * src, e if layer == 0 else h, gh)
    flops += _mm(b * src, h, gh)
  # Bridge: tanh(W s + b) per part of each decoder layer's initial carry.
  flops += (2 if cell == "lstm" else 1) * s.decoder_layers * _mm(b, h, h)
  # Decoder: the embedding's share of the first layer's input projection
  # (hoisted), the other layers' input projections, and the recurrence of
  # every layer at every target step.
  flops += _mm(b * tgt, e, gh) + (s.decoder_layers - 1) * _mm(b * tgt, h, gh)
  flops += s.decoder_layers * _mm(b * tgt, h, gh)
  if decoder == "plain":
    flops += _mm(b, h, gh)  # the fixed context's share of the input projection, once
    readout = h + h + e  # [h_t; c; e(y_{t-1})]
  elif decoder == "bahdanau":
    flops += _mm(b * src, h, s.attention_dim)  # key projection, once per sequence
    flops += _mm(b * tgt, h, s.attention_dim)  # query projection, every step
    flops += _mm(b * tgt * src, s.attention_dim, 1)  # v . tanh(q + k)
    flops += _mm(b * tgt, src, h)  # context = weights @ encoder outputs
    flops += _mm(b * tgt, h, gh)  # the context's share of the input projection
    readout = h + h + e
  elif decoder == "luong":  # "general" score, input feeding
    flops += _mm(b * src, h, h)  # keys @ W^T, once per sequence
    flops += 2 * _mm(b * tgt, src, h)  # scores q . k and the context
    flops += _mm(b * tgt, 2 * h, h)  # attentional state tanh(W_c [c; h])
    flops += _mm(b * tgt, h, gh)  # input feeding: h~_{t-1}'s share of the input projection
    readout = h
  else:
    raise ValueError(f"unknown decoder {decoder!r}")
  return flops + _mm(b * tgt, readout, s.tgt_vocab)


def _transformer_forward_flops(s: Sizes, b: int, src: int, tgt: int) -> int:
  """Matmul FLOPs of the Transformer's teacher-forced forward pass. Heads do
  not change the count (h heads of d/h each); the causal mask hides half of
  the decoder's [T, T] scores, but all of them are computed, so all count."""
  d, f = s.d_model, s.d_ff
  bs, bt = b * src, b * tgt
  encoder = (_mm(bs, d, 3 * d)  # Q, K, V
             + _mm(bs, d, src) + _mm(bs, src, d)  # scores, weights @ V
             + _mm(bs, d, d)  # output projection
             + _mm(bs, d, f) + _mm(bs, f, d))  # feed-forward
  decoder = (_mm(bt, d, 3 * d) + _mm(bt, d, tgt) + _mm(bt, tgt, d) + _mm(bt, d, d)  # self
             + _mm(bt, d, d) + _mm(bs, d, 2 * d)  # cross: Q; K, V of the memory
             + _mm(bt, d, src) + _mm(bt, src, d) + _mm(bt, d, d)  # cross: scores, context, out
             + _mm(bt, d, f) + _mm(bt, f, d))
  return s.transformer_layers * (encoder + decoder) + _mm(bt, d, s.tgt_vocab)


def analytic_flops(model_name: str, sizes: Sizes, batch: int, src_len: int, tgt_len: int,
                   train: bool = True) -> int:
  """Matmul FLOPs of one train step (train=True) or teacher-forced forward pass.

  Counts 2*m*n*k per matmul over the padded lengths (what is computed):
  input projections, recurrent matmuls at every time step, attention
  scores and contexts, the output layer; for the Transformer the Q/K/V and
  output projections, both attention matmuls and the feed-forward layers.
  Elementwise work, softmaxes and the optimizer are not counted. A train
  step is 3 forward passes (the backward pass computes two matmuls per
  forward one: the gradient of each operand).
  """
  if model_name == "transformer":
    forward = _transformer_forward_flops(sizes, batch, src_len, tgt_len)
  elif model_name in RNN_MODELS:
    forward = _rnn_forward_flops(*RNN_MODELS[model_name], sizes, batch, src_len, tgt_len)
  else:
    raise ConfigError(f"unknown model {model_name!r}; choose from {', '.join(MODELS)}")
  return 3 * forward if train else forward


# -- machine, memory and XLA's own accounting --------------------------------------

def measure_matmul_peak(sizes: Sequence[int] = (512, 1024, 2048), repeats: int = 5) -> dict:
  """The machine's float32 matmul speed: a jitted [n, n] @ [n, n] at each n,
  best time over `repeats` calls; the peak is the best GFLOP/s over n.
  (Default matmul precision, the same as the models use.)"""
  matmul = jax.jit(jnp.matmul)
  by_size = []
  for n in sizes:
    ka, kb = jax.random.split(jax.random.key(n))
    a = jax.random.normal(ka, (n, n), jnp.float32)
    b = jax.random.normal(kb, (n, n), jnp.float32)
    jax.block_until_ready(matmul(a, b))  # compile and warm up
    best = math.inf
    for _ in range(repeats):
      start = time.perf_counter()
      jax.block_until_ready(matmul(a, b))
      best = min(best, time.perf_counter() - start)
    by_size.append({"n": int(n), "best_ms": 1e3 * best, "gflops": 2 * n ** 3 / best / 1e9})
  return {"gflops": max(r["gflops"] for r in by_size), "by_size": by_size,
          "repeats": repeats, "dtype": "float32"}


def _cpu_model_name() -> Optional[str]:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return None


def machine_info(torch_used: bool = False) -> dict:
  """Where and with what the numbers were measured."""
  import flax  # noqa: PLC0415
  import jaxlib  # noqa: PLC0415
  device = jax.devices()[0]
  info = {
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "processor": platform.processor(),
      "cpu_model": _cpu_model_name(),
      "uname": dict(platform.uname()._asdict()),
      "cpu_count": os.cpu_count(),
      "python": platform.python_version(),
      "jax": jax.__version__,
      "jaxlib": jaxlib.__version__,
      "flax": flax.__version__,
      "backend": jax.default_backend(),
      "device_kind": device.device_kind,
      "device_count": jax.device_count(),
      "xla_flags": os.environ.get("XLA_FLAGS"),
      # A persistent compilation cache turns compile times into cache loads.
      "compilation_cache_dir": jax.config.jax_compilation_cache_dir,
  }
  if torch_used:
    info["torch"] = torch_version()
  return info


def memory_snapshot() -> dict:
  """Peak memory so far: the device's own counter where it has one (GPU,
  TPU), else the process's resident set (CPU: arrays live in host memory)."""
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return {"source": "device_peak_bytes_in_use", "peak_bytes": int(stats["peak_bytes_in_use"]),
            "current_bytes": int(stats.get("bytes_in_use", 0))}
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  peak *= 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
  current = None
  try:
    with open("/proc/self/statm", encoding="utf-8") as f:
      current = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
  except (OSError, ValueError, IndexError):
    pass
  return {"source": "process_rss", "peak_bytes": int(peak), "current_bytes": current}


def compiled_memory(compiled) -> Optional[dict]:
  """XLA's memory analysis of a compiled executable, where available."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # noqa: BLE001  (not implemented on every backend)
    return None
  if m is None:
    return None
  temp, arg, out = m.temp_size_in_bytes, m.argument_size_in_bytes, m.output_size_in_bytes
  return {"temp_bytes": int(temp), "argument_bytes": int(arg), "output_bytes": int(out),
          "alias_bytes": int(m.alias_size_in_bytes), "total_bytes": int(temp + arg + out)}


def xla_flops(compiled) -> Optional[float]:
  """XLA's FLOP count of a compiled executable (a loop body counted once)."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # noqa: BLE001
    return None
  if isinstance(cost, (list, tuple)):  # older JAX: one dict per program
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    return None
  return float(cost["flops"])


# -- timing -----------------------------------------------------------------------

def _summary_ms(seconds: Sequence[float]) -> dict:
  ms = [1e3 * s for s in seconds]
  return {"min_ms": min(ms), "median_ms": float(np.median(ms)), "max_ms": max(ms),
          "times_ms": ms}


def time_turns(calls: dict, warmup: int, repeats: int, rounds: int = 1) -> dict:
  """Times each of `calls` (name -> a function that returns when its work is
  done) `repeats` times, the calls taking turns: after every call's
  warm-up, `rounds` rounds in which each runs its share of the repeats, the
  order reversed every round, so that a drift in the machine's speed (other
  work on a shared machine) reaches all of them alike.

  Returns name -> min / median / max ms over all timed calls, the times,
  and the median of each round.
  """
  for fn in calls.values():
    for _ in range(warmup):
      fn()
  rounds = min(rounds, repeats)
  shares = [repeats // rounds + (i < repeats % rounds) for i in range(rounds)]
  seconds = {name: [] for name in calls}
  round_medians = {name: [] for name in calls}
  order = list(calls)
  for share in shares:
    for name in order:
      times = []
      for _ in range(share):
        start = time.perf_counter()
        calls[name]()
        times.append(time.perf_counter() - start)
      seconds[name] += times
      round_medians[name].append(1e3 * float(np.median(times)))
    order.reverse()
  return {name: {**_summary_ms(seconds[name]), "round_medians_ms": round_medians[name]}
          for name in calls}


def time_calls(fn: Callable[[], Any], warmup: int, repeats: int) -> dict:
  """Calls fn() warmup times, then times `repeats` calls, each one ended by
  `jax.block_until_ready` on its result."""
  return time_turns({"fn": lambda: jax.block_until_ready(fn())}, warmup, repeats)["fn"]


def _lower_and_compile(jitted, *args):
  start = time.perf_counter()
  lowered = jitted.lower(*args)
  lowered_at = time.perf_counter()
  compiled = lowered.compile()
  done = time.perf_counter()
  return compiled, {"lower_s": lowered_at - start, "compile_s": done - lowered_at}


class TrainStep:
  """The real train step of `model` (`training.step_function`, jitted with
  the state donated, as `training.jit_train_step` does), compiled for one
  batch, which goes to the device first: the host-to-device copy of a
  batch is not part of the step time.

  Calling it runs one step and waits for it; `state` is the train state
  after the last step (its params serve decoding); `record()` has
  "compile" (lower_s, compile_s), "num_params", "xla_flops",
  "compiled_memory".
  """

  def __init__(self, model, batch: dict, seed: int = 0):
    self.batch = jax.device_put(batch)
    self.rng = jax.random.key(seed)
    self.state = training.create_train_state(model, optimizer_config(), self.rng, self.batch)
    jax.block_until_ready(self.state)  # parameter init is not compile time
    step = jax.jit(training.step_function(), donate_argnums=(0,))
    self.compiled, self.compile_times = _lower_and_compile(step, self.state, self.batch,
                                                           self.rng)

  def __call__(self) -> None:
    self.state, metrics = self.compiled(self.state, self.batch, self.rng)  # old state donated
    jax.block_until_ready((self.state, metrics))

  def record(self) -> dict:
    return {"compile": self.compile_times,
            "num_params": int(sum(x.size for x in jax.tree.leaves(self.state.params))),
            "xla_flops": xla_flops(self.compiled),
            "compiled_memory": compiled_memory(self.compiled)}


def time_decode(model, params, src: np.ndarray, src_len: np.ndarray, max_len: int,
                beam_size: int, repeats: int) -> dict:
  """Compiles, then times `decoding.jit_decode` (greedy for beam_size 1) on
  one batch; median of `repeats` calls after one warm-up call."""
  src, src_len = jax.device_put((src, src_len))
  decode = decoding.jit_decode(model, max_len, beam_size=beam_size)
  compiled, compile_times = _lower_and_compile(decode, params, src, src_len)
  out = jax.device_get(compiled(params, src, src_len))
  timing = time_calls(lambda: compiled(params, src, src_len), 0, repeats)
  seconds = timing["median_ms"] / 1e3
  return {"beam_size": beam_size, "max_len": max_len, "compile": compile_times, **timing,
          "steps": int(out["steps"]), "sentences_per_s": src.shape[0] / seconds,
          "tokens_per_s": float(np.sum(out["lengths"])) / seconds}


def torch_step(name: str, sizes: Sizes, batch: dict, threads: int):
  """bench_torch's twin of `name` on the same NumPy batch: (step, record).
  step() runs one optimizer step and returns the loss as a Python number,
  which waits for the step to finish; record has the twin's description and
  parameter counts."""
  from seq2seq_jax import bench_torch  # noqa: PLC0415  (the one place torch is imported)
  twin = twin_sizes(name, sizes)
  step, num_params = bench_torch.step_timer(name, twin, batch, threads)
  return step, {"twin": bench_torch.describe(name, twin), "num_params": int(num_params),
                "extra_params": bench_torch.extra_params(name, twin), "threads": threads}


# -- recurrence variants ------------------------------------------------------------

def _time_grad(loss_fn, args, warmup, repeats) -> dict:
  """Forward + backward of a scalar loss w.r.t. all its arguments."""
  grad = jax.jit(jax.grad(loss_fn, argnums=tuple(range(len(args)))))
  jax.block_until_ready(args)
  compiled, compile_times = _lower_and_compile(grad, *args)
  return {"status": "ok", "compile": compile_times,
          **time_calls(lambda: compiled(*args), warmup, repeats)}


def time_variants(sizes: Sizes, batch: int = 64, length: int = 32, unrolls=(1, 2, 4, 8),
                  warmup: int = 3, repeats: int = 10, seed: int = 0) -> dict:
  """Ways of running one recurrent layer, forward + backward.

  Returns {"config": ..., "results": [{"group", "name", "status", "median_ms",
  ...}]}; groups: "unroll" (run_layer's unroll), "flax" (nn.RNN(GRUCell)
  against our scan), "cudnn" (GPU only).
  """
  import flax.linen as nn  # noqa: PLC0415

  e, h = sizes.embed, sizes.hidden
  rng = np.random.default_rng([seed, batch, length])
  x = jnp.asarray(rng.normal(size=(batch, length, e)).astype(np.float32))
  lengths = jnp.asarray(rng.integers(math.ceil(length / 2), length + 1, size=batch), jnp.int32)
  results = []

  def ours(kind, unroll):
    cell = recurrent.Cell(kind, e, h)
    params = cell.apply(cell.init(jax.random.key(seed)))

    def loss(params, x):
      out, _ = recurrent.run_layer(kind, params, recurrent.project(params, x), lengths,
                                   unroll=unroll)
      return jnp.sum(out)
    return _time_grad(loss, (params, x), warmup, repeats)

  by_unroll = {}
  for unroll in unrolls:
    by_unroll[unroll] = ours("gru", unroll)
    results.append({"group": "unroll", "name": f"run_layer gru unroll={unroll}",
                    **by_unroll[unroll]})

  rnn = nn.RNN(nn.GRUCell(features=h))
  flax_params = rnn.init(jax.random.key(seed), x, seq_lengths=lengths)

  def flax_loss(params, x):
    return jnp.sum(rnn.apply(params, x, seq_lengths=lengths))
  results.append({"group": "flax", "name": "flax nn.RNN(nn.GRUCell) (nn.scan)",
                  **_time_grad(flax_loss, (flax_params, x), warmup, repeats)})
  ours_scan = by_unroll[1] if 1 in by_unroll else ours("gru", 1)
  results.append({"group": "flax", "name": "ours: run_layer gru (lax.scan)", **ours_scan})

  if jax.default_backend() == "gpu":
    from jax.experimental import rnn as jax_rnn  # noqa: PLC0415
    weights = jax_rnn.init_lstm_weight(jax.random.key(seed), e, h, 1, False)
    h0 = jnp.zeros((1, batch, h), jnp.float32)

    def cudnn_loss(weights, x):
      y, _, _ = jax_rnn.lstm(x, h0, h0, weights, lengths, input_size=e, hidden_size=h,
                             num_layers=1, dropout=0.0, bidirectional=False)
      return jnp.sum(y)
    results.append({"group": "cudnn", "name": "cuDNN LSTM (jax.experimental.rnn)",
                    **_time_grad(cudnn_loss, (weights, x), warmup, repeats)})
    results.append({"group": "cudnn", "name": "ours: run_layer lstm", **ours("lstm", 1)})
  else:
    results.append({"group": "cudnn", "name": "cuDNN LSTM (jax.experimental.rnn)",
                    "status": "skipped", "reason": "needs a GPU"})
  return {"config": {"cell": "gru", "batch": batch, "length": length, "in_features": e,
                     "hidden": h, "warmup": warmup, "repeats": repeats},
          "results": results}


# -- the sweep ------------------------------------------------------------------------

@dataclasses.dataclass
class _Point:
  """One (model, sizes, batch, lengths) to measure, and the sweeps it is in."""
  model: str
  label: str  # the model name, or a goal's label for its sizes ("gru_bahdanau_h64_l1")
  sizes: Sizes
  batch: int
  src_len: int
  tgt_len: int
  sweeps: list
  chains: list  # sweeps the point is in, as (label, sweep): skips are estimated along them
  decode: bool = False
  torch: bool = False
  capped: bool = False


def plan(options: Options) -> list:
  """The points of a run, in the order they are measured: per model, the
  batch sweep at the date point (it contains the headline point at
  --batch_size), then the length sweep; then the goals' extra points (at
  the date point, where a target's sizes are not the headline's)."""
  o = options
  src_d, tgt_d = o.date
  points = {}

  def add(model, label, sizes, b, s, t, sweep, chain, decode, capped=False):
    key = (model, sizes, b, s, t)
    if key in points:  # one measurement serves both sweeps
      points[key].sweeps.append(sweep)
      points[key].chains.append(chain)
      points[key].decode |= decode
      return
    points[key] = _Point(model, label, sizes, b, s, t, [sweep], [chain], decode,
                         o.with_torch, capped)

  for model in o.models:
    for b in sorted(set(o.batch_sizes) | {o.batch_size}):
      sweep = "date" if b == o.batch_size else "batch"
      add(model, model, o.sizes, b, src_d, tgt_d, sweep, (model, "batch"),
          o.decode and b == o.batch_size)
      if b == o.batch_size and b in o.batch_sizes:
        points[(model, o.sizes, b, src_d, tgt_d)].sweeps.append("batch")
    for length in sorted(o.lengths):
      capped = (model in o.capped_models and o.capped_max_len > 0
                and length > o.capped_max_len)
      add(model, model, o.sizes, o.batch_size, length, length, "length", (model, "length"),
          o.decode and length <= o.decode_max_len, capped)
  if o.with_torch and o.goals:
    for goal in GOALS:  # the sizes the targets name beside the headline's
      if goal.point and goal.model in o.models:
        add(goal.model, goal.label, dataclasses.replace(o.sizes, **goal.point), o.batch_size,
            src_d, tgt_d, "goal", (goal.label, "goal"), False)
  return list(points.values())


class _SkipRule:
  """Skips points predicted to take longer than `limit` seconds.

  Points of one sweep (a chain) are measured smallest first. A point's time
  is predicted from the last measured point of its chain: its compile time
  plus (warm-up + repeats) of its median step scaled by the ratio of
  analytic FLOPs. Once a point of a chain is skipped, the larger points
  after it are skipped too.
  """

  def __init__(self, limit: float, steps: int, torch: bool = False):
    self.limit, self.steps, self.torch = limit, steps, torch
    self.last = {}  # chain -> (record, flops) of its last measured point
    self.blocked = {}  # chain -> why the rest of it is skipped

  def _estimate(self, prev: dict, prev_flops: int, flops: int) -> float:
    scale = flops / max(prev_flops, 1)
    if self.torch:  # eager PyTorch: nothing to compile
      return self.steps * prev["median_ms"] / 1e3 * scale
    compile_s = prev["compile"]["lower_s"] + prev["compile"]["compile_s"]
    return compile_s + self.steps * prev["step"]["median_ms"] / 1e3 * scale

  def check(self, chains: list, flops: int):
    """(reason, estimated seconds): reason is None if the point is to be run."""
    for chain in chains:
      if chain in self.blocked:
        return self.blocked[chain], None
    estimates = [self._estimate(*self.last[c], flops) for c in chains if c in self.last]
    estimate = max(estimates, default=None)
    if estimate is not None and estimate > self.limit:
      reason = f"estimated {estimate:.0f} s > --max_seconds_per_point={self.limit:g}"
      for chain in chains:
        self.blocked[chain] = f"a smaller point of this sweep was skipped ({reason})"
      return reason, estimate
    return None, estimate

  def measured(self, chains: list, record: dict, flops: int) -> None:
    for chain in chains:
      self.last[chain] = (record, flops)


def measure_point(p: _Point, options: Options, peak_gflops: float,
                  torch_skip: Optional[dict] = None) -> dict:
  """Train step (and decoding, and PyTorch, as planned) at one point. JAX
  and PyTorch take turns (`time_turns`); torch_skip: why PyTorch is not
  run here (a record with status "skipped"), or None."""
  o = options
  batch = synthetic_batch(p.batch, p.src_len, p.tgt_len, p.sizes.src_vocab,
                          p.sizes.tgt_vocab, o.seed)
  model = build_model(p.model, p.sizes, max_len=max(p.src_len, p.tgt_len))
  train = TrainStep(model, batch, o.seed)
  calls = {"jax": train}
  if p.torch and torch_skip is None:
    calls["torch"], torch_record = torch_step(p.model, p.sizes, batch, o.torch_threads)
  times = time_turns(calls, o.warmup, o.repeats, o.rounds)
  info = train.record()
  flops = analytic_flops(p.model, p.sizes, p.batch, p.src_len, p.tgt_len)
  seconds = times["jax"]["median_ms"] / 1e3
  tokens = float(batch["weights"].sum())
  achieved = flops / seconds / 1e9
  record = {
      "status": "ok",
      "num_params": info["num_params"],
      "compile": info["compile"],
      "step": times["jax"],
      "target_tokens": tokens,
      "tokens_per_s": tokens / seconds,
      "flops": {"analytic": flops, "xla": info["xla_flops"],
                "achieved_gflops": achieved, "peak_fraction": achieved / peak_gflops},
      "memory": {**memory_snapshot(), "compiled": info["compiled_memory"]},
  }
  if "torch" in times:
    record["torch"] = {"status": "ok", **torch_record, **times["torch"],
                       "ratio": times["torch"]["median_ms"] / times["jax"]["median_ms"]}
  elif p.torch:
    record["torch"] = torch_skip
  if p.decode:
    record["decode"] = {}
    for beam in sorted({1, o.beam_size}):
      name = "greedy" if beam == 1 else f"beam{beam}"
      record["decode"][name] = time_decode(model, train.state.params, batch["src"],
                                           batch["src_len"], p.tgt_len, beam, o.decode_repeats)
  return record


_CACHE_NOTE = ("a persistent compilation cache is in use, so compile times may be cache "
               "loads")


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
            "reason": f"bench_torch's Transformer has {TORCH_MAX_LEN} positions"}
  reason, estimate = skip.check(p.chains, flops)
  if reason:
    return {"status": "skipped", "reason": reason, "estimated_seconds": estimate}
  return None


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


# -- reports --------------------------------------------------------------------------

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
      + (f", JAX and PyTorch in turns over {_plural(o['rounds'], 'round')}"
         if o["with_torch"] else "") + "; compile s = lower + compile; "
      "GFLOP/s from the analytic matmul count; XLA MiB = temp + argument + output of "
      "the compiled step; torch/jax above 1 means JAX is faster",
  ]
  if m["compilation_cache_dir"]:
    lines.append(f"- note: {_CACHE_NOTE} (`{m['compilation_cache_dir']}`)")
  lines.append("")
  for title, body in _sections(results, markdown=True):
    lines += [f"## {title}", "", body, ""]
  lines += ["Skipped points and how times are estimated: see the docstring of "
            "`seq2seq_jax/benchmark.py`.", ""]
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


# -- command line -----------------------------------------------------------------------

def define_flags(flag_values=None):
  """The command-line flags (defined only when run as a program, so that
  importing this module defines no global flags). flag_values: where to
  define them (default: absl's global FLAGS)."""
  from absl import flags  # noqa: PLC0415
  fv = flags.FLAGS if flag_values is None else flag_values
  d, s = Options(), Sizes()

  def define(kind, name, default, help_text):
    getattr(flags, f"DEFINE_{kind}")(name, default, help_text, flag_values=fv)

  define("list", "models", list(d.models), f"Models to run: {', '.join(MODELS)}.")
  flags.DEFINE_enum("preset", d.preset, ["auto", *PRESETS], "Defaults for lengths, batch "
                    "sizes, the cap and the time limit (auto: cpu on the CPU backend, else "
                    "gpu).", flag_values=fv)
  define("list", "lengths", None, "Length sweep, S = T = L (cpu: 16,...,256; gpu: ...,512); "
         "empty (--lengths=) for none.")
  define("integer", "batch_size", None, "Batch of the length sweep and the date point (64).")
  define("list", "batch_sizes", None, "Batch sweep at the date point (cpu: 16,64,256; gpu: "
         "...,1024).")
  define("list", "date", [str(x) for x in d.date], "Source,target length of the headline "
         "point (like the built-in date task).")
  for name, help_text in [
      ("embed", "RNN embedding size."), ("hidden", "RNN hidden size (encoder and decoder)."),
      ("layers", "RNN encoder layers."), ("decoder_layers", "RNN decoder layers."),
      ("attention_dim", "Bahdanau score's tanh layer."), ("d_model", "Transformer width."),
      ("heads", "Transformer heads."), ("transformer_layers", "Transformer layers (each side)."),
      ("d_ff", "Transformer feed-forward size."), ("src_vocab", "Source vocabulary size."),
      ("tgt_vocab", "Target vocabulary size.")]:
    define("integer", name, getattr(s, name), help_text)
  define("float", "dropout", s.dropout, "Dropout of every model.")
  define("integer", "warmup", d.warmup, "Untimed steps before timing.")
  define("integer", "repeats", d.repeats, "Timed steps per point.")
  define("boolean", "decode", d.decode, "Time greedy and beam decoding.")
  define("integer", "decode_max_len", d.decode_max_len, "Decode on length points up to this.")
  define("integer", "decode_repeats", d.decode_repeats, "Timed decoding calls per point.")
  define("integer", "beam_size", d.beam_size, "Beam of the beam-search timing.")
  define("boolean", "variants", d.variants, "Time the recurrence variants.")
  define("integer", "variant_batch", d.variant_batch, "Batch of the variants.")
  define("integer", "variant_length", d.variant_length, "Length of the variants.")
  define("list", "variant_unrolls", [str(u) for u in d.variant_unrolls],
         "run_layer unrolls to compare.")
  define("float", "max_seconds_per_point", None, "Skip a point estimated to take longer "
         "(cpu: 90, gpu: 120).")
  define("list", "capped_models", list(d.capped_models), "Models run only up to "
         "--capped_max_len.")
  define("integer", "capped_max_len", None, "Longest length of the capped models; 0 = no cap "
         "(cpu: 64, gpu: 0).")
  define("list", "matmul_sizes", [str(n) for n in d.matmul_sizes], "n of the matmul-peak "
         "measurement.")
  define("boolean", "with_torch", d.with_torch, "Also time each model's PyTorch twin.")
  define("integer", "rounds", d.rounds, "JAX and PyTorch take turns at each point in this "
         "many rounds of --repeats / rounds steps each (a drifting machine speed reaches "
         "both alike).")
  define("integer", "torch_threads", d.torch_threads, "PyTorch's intra-op threads.")
  define("boolean", "goals", d.goals, "Report the speed issue's targets, measured (with "
         "--with_torch also at the sizes they name).")
  define("integer", "seed", d.seed, "Seed of the synthetic batches and parameters.")
  define("string", "out_dir", d.out_dir, "Where benchmark.json, .md and .png go.")


def _ints(name: str, values) -> Optional[tuple]:
  if values is None:
    return None
  try:
    return tuple(int(v) for v in values)
  except ValueError:
    raise ConfigError(f"--{name} must be comma-separated integers, got {','.join(values)}") \
        from None


INT_LISTS = ("lengths", "batch_sizes", "date", "variant_unrolls", "matmul_sizes")


def options_from_flags(flag_values) -> Options:
  """Options from parsed flags (every Options and Sizes field has its flag)."""
  value = lambda name: flag_values[name].value
  sizes = Sizes(**{f.name: value(f.name) for f in dataclasses.fields(Sizes)})
  fields = {}
  for f in dataclasses.fields(Options):
    if f.name != "sizes":
      v = value(f.name)
      fields[f.name] = _ints(f.name, v) if f.name in INT_LISTS else (
          tuple(v) if isinstance(v, list) else v)
  return Options(sizes=sizes, **fields)


def _fail(message: str):
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def _parse_flags_or_exit(argv):
  """absl's flag parser, with a mistake as one line and exit status 2."""
  from absl import flags  # noqa: PLC0415
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(str(e))


def main(argv):
  from absl import flags  # noqa: PLC0415
  from absl import logging as absl_logging  # noqa: PLC0415
  absl_logging.set_verbosity(absl_logging.WARNING)
  if len(argv) > 1:
    _fail(f"unexpected arguments {argv[1:]}")
  command = shlex.join(["python", "-m", "seq2seq_jax.benchmark"] + sys.argv[1:])
  try:
    options = options_from_flags(flags.FLAGS)
    options = options.resolved()
    validate(options)  # before any measurement: a typo costs no time
    run(options, command=command)
  except UserError as e:
    _fail(str(e))


if __name__ == "__main__":
  from absl import app

  define_flags()
  app.run(main, flags_parser=_parse_flags_or_exit)
