"""seq2seq_jax.host: a program's scratch memory is reused, not faulted in
again at every call, and results do not change. Each case runs in a fresh
process, since the settings must come before JAX's first computation."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from seq2seq_jax import host

_PROBE = r"""
import json, resource, sys
from seq2seq_jax import host
applied = host.configure()
import jax, jax.numpy as jnp
import numpy as np

@jax.jit
def f(x, w):  # about 64 MB of scratch memory per call
  h = jnp.tanh(x @ w)
  g = jnp.tanh(h @ w.T + x)
  return jnp.sum(g * h, axis=0) + jnp.sum(jnp.sin(h) * g, axis=0)

x = jax.random.normal(jax.random.key(0), (4096, 1024))
w = jax.random.normal(jax.random.key(1), (1024, 1024)) / 32
for _ in range(3):
  out = jax.block_until_ready(f(x, w))
counts = []  # page faults of each call; the median ignores a one-off (a thread's first use)
for _ in range(7):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  out = jax.block_until_ready(f(x, w))
  counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
faults = float(np.median(counts))
print(json.dumps({"applied": applied, "faults_per_call": faults,
                  "out": np.asarray(out).tolist()}))
"""


def _probe(env_value):
  env = dict(os.environ)
  env.pop(host.ENV, None)
  env.pop("XLA_FLAGS", None)
  if env_value is not None:
    env[host.ENV] = env_value
  done = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                        text=True, timeout=300, check=True)
  return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def probes():
  return _probe(None), _probe("default")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc settings")
def test_configured_process_reuses_scratch_memory(probes):
  tuned, _ = probes
  assert tuned["applied"] == {"malloc": True, "sync_cpu_dispatch": True,
                              "vector_width_512": True}
  # 64 MB of scratch faulted in again would be ~16,000 faults per call.
  assert tuned["faults_per_call"] < 500, tuned["faults_per_call"]


def test_settings_do_not_change_results(probes):
  tuned, default = probes
  assert default["applied"] == {"malloc": False, "sync_cpu_dispatch": False,
                                "vector_width_512": False}
  # Wider vectors may change how sums round, nothing more.
  np.testing.assert_allclose(tuned["out"], default["out"], rtol=1e-5, atol=1e-5)
