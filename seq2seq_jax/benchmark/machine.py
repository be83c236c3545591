"""FLOP counts, the machine's matmul peak, memory and XLA's own accounting."""

import datetime
import math
import os
import platform
import resource
import sys
import time
from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from seq2seq_jax import host
from seq2seq_jax.errors import ConfigError
from seq2seq_jax.models import cpu_kernels, recurrent
from seq2seq_jax.benchmark.options import MODELS, RNN_MODELS, Sizes, torch_version


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

  Counts 2*m*n*k per matmul over the padded lengths (what JAX's loops
  compute; the GRU kernels skip a row's padded steps, PyTorch's packed
  encoders too):
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
      "host_settings": host.applied(),  # seq2seq_jax.host, shared by JAX and PyTorch
      # GRU layers and Bahdanau GRU decoders run the compiled kernels
      # (recurrence "fused", the default) for this instruction set: "avx512",
      # "avx2", or None (JAX's loops).
      "cpu_kernels": cpu_kernels.isa() if jax.default_backend() == "cpu" else None,
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
