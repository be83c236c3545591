"""Does a fused GRU kernel beat XLA's scan on the CPU? A measurement probe
for the speed issue's fused-kernel lever, not part of the package.

  python tools/ffi_gru/probe.py

Builds `gru_kernel.cc` with g++ (-O3 -march=native) against jaxlib's FFI
headers into ~/.cache/seq2seq_jax/ffi_gru/, then:

1. checks the kernel's values and gradients against
   `recurrent_vjp.carries` (the package's hand-written backward pass, itself
   tested against autodiff of the plain scan): one GRU layer, padded rows;
2. times one layer's forward + backward, kernel against scan, in turns;
3. times the benchmark's train step of GRU models with every GRU layer that
   goes through `recurrent_vjp.carries` on the kernel (the encoder; the
   plain decoder too), against the package as it is, in turns.

The kernel handles float32 GRUs with hidden a multiple of 64, on a CPU with AVX-512 only.
"""

import argparse
import ctypes
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from seq2seq_jax.benchmark import models, timing  # noqa: E402
from seq2seq_jax.benchmark.options import Sizes  # noqa: E402
from seq2seq_jax.models import recurrent_vjp  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def build() -> str:
  source = os.path.join(HERE, "gru_kernel.cc")
  out_dir = os.path.join(os.path.expanduser(os.environ.get("XDG_CACHE_HOME", "~/.cache")),
                         "seq2seq_jax", "ffi_gru")
  lib = os.path.join(out_dir, "libgru_kernel.so")
  if not os.path.exists(lib) or os.path.getmtime(lib) < os.path.getmtime(source):
    os.makedirs(out_dir, exist_ok=True)
    subprocess.run(["g++", "-O3", "-march=native", "-ffast-math", "-fopenmp-simd", "-std=c++17",
                    "-shared", "-fPIC", "-w", f"-I{jax.ffi.include_dir()}", source, "-o", lib],
                   check=True)
  return lib


def register(lib_path: str) -> None:
  lib = ctypes.cdll.LoadLibrary(lib_path)
  jax.ffi.register_ffi_target("gru_forward", jax.ffi.pycapsule(lib.GruForward), platform="cpu")
  jax.ffi.register_ffi_target("gru_backward", jax.ffi.pycapsule(lib.GruBackward),
                              platform="cpu")


def _forward(w_h, b_h, xs, valid, h0):
  t, b, h = xs[0].shape
  out = (jax.ShapeDtypeStruct((t, b, h), jnp.float32),
         jax.ShapeDtypeStruct((t, b, 3 * h), jnp.float32))
  return jax.ffi.ffi_call("gru_forward", out)(w_h, b_h, *xs, valid, h0)


@jax.custom_vjp
def fused(w_h, b_h, xs, valid, h0):
  """recurrent_vjp.carries("gru", ...) on the kernel."""
  return _forward(w_h, b_h, xs, valid, h0)[0]


def _fused_fwd(w_h, b_h, xs, valid, h0):
  seq, hps = _forward(w_h, b_h, xs, valid, h0)
  return seq, (w_h, xs, valid, h0, seq, hps)


def _fused_bwd(residuals, grad_seq):
  w_h, xs, valid, h0, seq, hps = residuals
  t, b, h = seq.shape
  out = (jax.ShapeDtypeStruct((t, b, 3 * h), jnp.float32),
         jax.ShapeDtypeStruct((t, b, h), jnp.float32), jax.ShapeDtypeStruct((b, h), jnp.float32))
  gates, da_n, grad0 = jax.ffi.ffi_call("gru_backward", out)(w_h, grad_seq, seq, h0, *xs, hps,
                                                              valid)
  prev = jnp.concatenate([h0[None], seq[:-1]], 0)
  dw_h = jnp.einsum("tbi,tbj->ij", prev, gates)  # one matmul after the loop, as in recurrent_vjp
  dxs = jnp.split(gates, 3, axis=-1)
  return dw_h, jnp.sum(gates, axis=(0, 1)), (dxs[0], dxs[1], da_n), None, grad0


fused.defvjp(_fused_fwd, _fused_bwd)


def _layer_inputs(t, b, h, seed=0):
  rng = np.random.default_rng(seed)
  w_h = jnp.asarray(rng.normal(size=(h, 3 * h)) / np.sqrt(h), jnp.float32)
  b_h = jnp.asarray(rng.normal(size=(3 * h,)) * 0.1, jnp.float32)
  xs = tuple(jnp.asarray(rng.normal(size=(t, b, h)), jnp.float32) for _ in range(3))
  valid = jnp.asarray(np.arange(t)[:, None] < rng.integers(1, t + 1, size=b)[None, :])
  h0 = jnp.asarray(rng.normal(size=(b, h)) * 0.5, jnp.float32)
  weights = jnp.asarray(rng.normal(size=(t, b, h)), jnp.float32)
  return (w_h, b_h, xs, h0), valid, weights


def layer(t, b, h, repeats):
  args, valid, weights = _layer_inputs(t, b, h)

  def grad_of(carries):
    def loss(w_h, b_h, xs, h0):
      return jnp.sum(jnp.sin(carries(w_h, b_h, xs, valid, h0)) * weights)
    return jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))

  kernel = grad_of(fused)
  scan = grad_of(lambda *a: recurrent_vjp.carries("gru", *a))
  got, want = kernel(*args), scan(*args)
  rel = max(float(jnp.max(jnp.abs(x - y)) / jnp.max(jnp.abs(y)))
            for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want)))
  times = timing.time_turns({"kernel": lambda: jax.block_until_ready(kernel(*args)),
                             "scan": lambda: jax.block_until_ready(scan(*args))},
                            3, repeats, 3)
  return rel, {k: v["median_ms"] for k, v in times.items()}


def model(name, hidden, layers, repeats):
  sizes = Sizes(hidden=hidden, layers=layers, decoder_layers=layers, embed=64,
                attention_dim=hidden, dropout=0.0, src_vocab=44, tgt_vocab=44)
  batch = models.synthetic_batch(64, 28, 12, 44, 44)
  package = recurrent_vjp.carries

  def on_kernel(kind, *args):
    return fused(*args) if kind == "gru" else package(kind, *args)

  recurrent_vjp.carries = on_kernel  # read when the step is traced, below
  try:
    kernel = timing.TrainStep(models.build_model(name, sizes), batch)
  finally:
    recurrent_vjp.carries = package
  scan = timing.TrainStep(models.build_model(name, sizes), batch)
  times = timing.time_turns({"kernel": kernel, "scan": scan}, 3, repeats, 3)
  return {k: v["median_ms"] for k, v in times.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=30)
  args = parser.parse_args()
  register(build())
  print(f"jax {jax.__version__}, {os.cpu_count()} CPUs")
  for t, b, h in [(28, 64, 256), (28, 64, 64), (12, 256, 192)]:
    rel, ms = layer(t, b, h, args.repeats)
    print(f"GRU layer T={t} B={b} H={h}: forward + backward, kernel {ms['kernel']:.2f} ms, "
          f"scan {ms['scan']:.2f} ms; gradients' largest relative difference {rel:.1e}")
  for name, hidden, layers in [("gru_plain", 256, 2), ("gru_bahdanau", 256, 2),
                               ("gru_bahdanau", 64, 1)]:
    ms = model(name, hidden, layers, args.repeats)
    print(f"train step {name} h{hidden} {layers}+{layers} layers, B=64 S=28 T=12: "
          f"kernel {ms['kernel']:.1f} ms, package {ms['scan']:.1f} ms")


if __name__ == "__main__":
  main()
