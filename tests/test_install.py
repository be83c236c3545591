"""The package installs: a wheel built from the checkout by pip (compiling
the CPU kernels), unpacked outside it, imports from there and trains and
decodes with no `configs/` directory and no checkout on the path."""

import json
import os
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Run from the unpacked wheel: one train step through the compiled step that
# runs train.py, and one greedy decode, of the default config's model.
_SCRIPT = r"""
import json, sys
import jax, numpy as np
import seq2seq_jax
from seq2seq_jax import config_defaults, decoding, models, parallel
from seq2seq_jax.models import _cpu_kernels, cpu_kernels
from seq2seq_jax.data import batching

config = config_defaults.get_config()
config.model.encoder.hidden = config.model.decoder.hidden = 16
config.model.attention.dim = 8
model = models.build_model(config.model, 12, 10)
rng = np.random.default_rng(0)
rows = [(rng.integers(4, 12, 5), rng.integers(4, 10, 3), i) for i in range(4)]
batch = {k: v for k, v in batching.fill_batch((8, 6), 4, rows).items() if k in batching.MODEL_KEYS}
engine = parallel.DataParallel("jit")
state = engine.init_state(model, config.train, jax.random.key(0), batch)
step = engine.train_step(train_cfg=config.train)
state, metrics = step(state, engine.put_batch(batch), jax.random.key(1))
out = decoding.jit_decode(model, 6)(engine.local_params(state), batch["src"], batch["src_len"])
print(json.dumps({"file": seq2seq_jax.__file__, "kernel": _cpu_kernels.__file__,
                  "kernel_used": cpu_kernels.available() == bool(_cpu_kernels.isas()),
                  "step": int(state.step),
                  "loss": float(metrics["loss"]), "tokens": np.asarray(out["tokens"]).shape}))
"""


def test_wheel_installs_and_trains_outside_the_checkout(tmp_path):
  wheel_dir = tmp_path / "wheels"
  build = subprocess.run(
      [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
       "-w", str(wheel_dir), ROOT], capture_output=True, text=True, timeout=300)
  assert build.returncode == 0, build.stderr[-2000:]
  (wheel,) = wheel_dir.glob("seq2seq_jax-*.whl")
  with zipfile.ZipFile(wheel) as z:
    names = z.namelist()
    z.extractall(tmp_path / "site")
  assert "seq2seq_jax/config_defaults.py" in names
  assert "seq2seq_jax/benchmark/__main__.py" in names
  assert [n for n in names if n.startswith("seq2seq_jax/models/_cpu_kernels.") and n.endswith(".so")]
  assert not [n for n in names if n.startswith(("configs/", "tests/", "tools/"))]

  env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"))
  run = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  result = json.loads(run.stdout.strip().splitlines()[-1])
  assert result["file"].startswith(str(tmp_path / "site"))  # not the checkout
  assert result["kernel"].startswith(str(tmp_path / "site")) and result["kernel_used"]
  assert result["step"] == 1 and result["loss"] > 0
  assert result["tokens"] == [4, 1, 6]
