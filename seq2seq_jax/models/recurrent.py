"""Recurrent cells and layers, with the recurrence in `jax.lax.scan`.

The split between parameters and computation is deliberate:

* `Cell` is a Flax module that only *holds* a cell's weights and hands them
  out as a plain dict.
* `cell_step`, `run_layer` and friends are pure functions of those arrays, so
  they can run inside `jax.lax.scan` (Flax modules cannot be called inside raw
  JAX transforms) and can be reused by decoders that build their own step.

Gate convention (the same as cuDNN and PyTorch), with `xp = x @ w_i + b_i`
already computed for every time step *outside* the scan (one big matmul
instead of T small ones):

  rnn:  h' = tanh(xp + h @ w_h)
  gru:  r, z = sigmoid(xp_r + h @ w_hr + b_hr), sigmoid(xp_z + h @ w_hz + b_hz)
        n  = tanh(xp_n + r * (h @ w_hn + b_hn))
        h' = (1 - z) * n + z * h
  lstm: i, f, g, o = split(xp + h @ w_h)
        c' = sigmoid(f) * c + sigmoid(i) * tanh(g);  h' = sigmoid(o) * tanh(c')

An LSTM carry is the tuple `(c, h)`; the others carry `h` alone.
"""

import functools
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from seq2seq_jax.errors import ConfigError
from seq2seq_jax.models.dropout import Dropout
from seq2seq_jax.models import gru_cpu, recurrent_vjp

Array = jax.Array
Carry = Any  # h: [batch, hidden], or (c, h) for an LSTM

CELLS = ("rnn", "gru", "lstm")
_GATES = {"rnn": 1, "gru": 3, "lstm": 4}


def check_cell(kind: str, field: str = "cell") -> None:
  if kind not in _GATES:
    raise ConfigError(f"{field} must be one of {', '.join(CELLS)}, got {kind!r}")


def num_gates(kind: str) -> int:
  check_cell(kind)
  return _GATES[kind]


def zero_carry(kind: str, batch: int, hidden: int, dtype=jnp.float32) -> Carry:
  h = jnp.zeros((batch, hidden), dtype)
  return (h, h) if kind == "lstm" else h


def carry_hidden(kind: str, carry: Carry) -> Array:
  """The output `h` of a carry: [batch, hidden]."""
  return carry[1] if kind == "lstm" else carry


def cell_step(kind: str, params: dict, carry: Carry, xp: Array) -> Carry:
  """One step of a cell on a pre-projected input.

  Args:
    kind: "rnn", "gru" or "lstm".
    params: the dict returned by `Cell()`; only `w_h` (and `b_h` for a GRU)
      are used here, `w_i`/`b_i` having been applied to make `xp`.
    carry: previous carry, see `zero_carry`.
    xp: [batch, gates * hidden] input projection for this step, or the
      same split per gate: a tuple of `gates` arrays [batch, hidden]
      (`split_gates`). Inside a scan, pass the tuple: slicing gates out of a
      step's slice of a [time, batch, gates * hidden] array compiles, on XLA's
      CPU backend, to an elementwise loop several times slower than the same
      arithmetic on separate arrays.
  Returns:
    The new carry.
  """
  xg = split_gates(xp, num_gates(kind))
  if kind == "rnn":
    return jnp.tanh(xg[0] + carry @ params["w_h"])
  if kind == "gru":
    h = carry
    hp = h @ params["w_h"] + params["b_h"]
    xr, xz, xn = xg
    hr, hz, hn = jnp.split(hp, 3, axis=-1)
    r = jax.nn.sigmoid(xr + hr)
    z = jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + r * hn)
    return (1.0 - z) * n + z * h
  if kind == "lstm":
    c, h = carry
    hi, hf, hg, ho = jnp.split(h @ params["w_h"], 4, axis=-1)
    xi, xf, xg_, xo = xg
    c = jax.nn.sigmoid(xf + hf) * c + jax.nn.sigmoid(xi + hi) * jnp.tanh(xg_ + hg)
    return (c, jax.nn.sigmoid(xo + ho) * jnp.tanh(c))
  check_cell(kind)


def split_gates(xp, gates: int) -> tuple:
  """[..., gates * hidden] -> a tuple of `gates` arrays [..., hidden]
  (a tuple passes through)."""
  if isinstance(xp, (tuple, list)):
    return tuple(xp)
  return tuple(jnp.split(xp, gates, axis=-1))


def time_major_gates(xp: Array, gates: int) -> tuple:
  """[batch, time, gates * hidden] -> per gate [time, batch, hidden]: the
  layout a scan over time reads one contiguous slice of per gate and step."""
  return tuple(jnp.swapaxes(g, 0, 1) for g in split_gates(xp, gates))


def select_carry(valid: Array, new: Carry, old: Carry) -> Carry:
  """Keeps `old` where `valid` [batch] is False: padding never moves a state."""
  return jax.tree.map(lambda n, o: jnp.where(valid[:, None], n, o), new, old)


def _reverse_within_length(x: Array, lengths: Array) -> Array:
  """Reverses each row's first `length` steps, leaving padding in place.

  x: [batch, time, ...]; an involution, so it also undoes itself.
  """
  t = jnp.arange(x.shape[1])[None, :]
  idx = jnp.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
  return jnp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)


# How a layer's recurrence is run and differentiated:
#   "fused"       GRU layers on an x86-64 CPU with AVX2 or AVX-512: one compiled kernel call
#                 for the whole layer, forward and backward (`gru_cpu`); every
#                 other case (LSTM and RNN cells, GPU, TPU, no compiled
#                 extension) runs "custom_vjp", chosen automatically;
#   "custom_vjp"  the forward scan below with a hand-written backward pass that
#                 moves the recurrent weights' gradient out of the loop
#                 (`recurrent_vjp`): the same function and gradients, faster;
#   "scan"        the plain `lax.scan`, differentiated by JAX: the reference
#                 the others are tested against.
RECURRENCES = ("fused", "custom_vjp", "scan")


def check_recurrence(name: str, field: str = "model.recurrence") -> None:
  if name not in RECURRENCES:
    raise ConfigError(f"{field} must be one of {', '.join(RECURRENCES)}, got {name!r}")


def run_layer(kind: str, params: dict, xp: Array, lengths: Array,
              carry: Optional[Carry] = None, reverse: bool = False, unroll: int = 1,
              recurrence: str = "scan"):
  """Runs one cell over time with `lax.scan`, masked by `lengths`.

  Args:
    xp: [batch, time, gates * hidden] projected inputs (`x @ w_i + b_i`).
    lengths: int32 [batch] true lengths; steps at or past a row's length leave
      its carry untouched and output zeros.
    carry: initial carry (zeros when None).
    reverse: run each sequence from its last real step back to its first
      (the backward half of a bidirectional layer); outputs stay aligned with
      the input positions.
    unroll: steps per loop iteration of the scan (`lax.scan`'s `unroll`):
      the same result, a speed trade-off measured by `seq2seq_jax.benchmark`.
      ("scan" only.)
    recurrence: one of RECURRENCES.
  Returns:
    outputs: [batch, time, hidden], zero on padding.
    final: the carry after each row's last real step.
  """
  batch, steps = xp.shape[:2]
  hidden = params["w_h"].shape[0]
  if carry is None:
    carry = zero_carry(kind, batch, hidden, xp.dtype)
  check_recurrence(recurrence)
  if kind == "gru" and recurrence == "fused":
    return gru_cpu.layer(params, xp, lengths, carry, reverse, projected=True, fallback=lambda: (
        run_layer(kind, params, xp, lengths, carry, reverse, unroll, "custom_vjp")))
  if reverse:
    xp = _reverse_within_length(xp, lengths)
  if recurrence != "scan":
    valid = _valid_steps(steps, lengths)
    seq = recurrent_vjp.carries(kind, params["w_h"], _recurrent_bias(params),
                                time_major_gates(xp, num_gates(kind)), valid, carry)
    return _outputs_and_final(kind, seq, valid, lengths, reverse)

  def body(carry, inputs):
    xp_t, t = inputs
    valid = t < lengths
    carry = select_carry(valid, cell_step(kind, params, carry, xp_t), carry)
    out = jnp.where(valid[:, None], carry_hidden(kind, carry), 0.0)
    return carry, out

  xs = (time_major_gates(xp, num_gates(kind)), jnp.arange(steps))
  final, outputs = jax.lax.scan(body, carry, xs, unroll=unroll)
  outputs = jnp.swapaxes(outputs, 0, 1)
  if reverse:
    outputs = _reverse_within_length(outputs, lengths)
  return outputs, final


def encode_layer(kind: str, params: dict, x: Array, lengths: Array, reverse: bool = False,
                 unroll: int = 1, recurrence: str = "scan"):
  """`run_layer` over the layer's input x [batch, time, in] (not yet
  projected) from a zero carry: with "fused", a GRU layer's kernel does the
  projection too."""
  if kind == "gru" and recurrence == "fused":
    carry = zero_carry(kind, x.shape[0], params["w_h"].shape[0], x.dtype)
    return gru_cpu.layer(params, x, lengths, carry, reverse, projected=False, fallback=lambda: (
        run_layer(kind, params, project(params, x), lengths, carry, reverse, unroll,
                  "custom_vjp")))
  return run_layer(kind, params, project(params, x), lengths, reverse=reverse, unroll=unroll,
                   recurrence=recurrence)


def _valid_steps(steps: int, lengths: Array) -> Array:
  return jnp.arange(steps)[:, None] < lengths[None, :]  # [time, batch]


def _recurrent_bias(params: dict) -> Array:
  """A GRU's b_h, zeros for the cells that have none."""
  return params.get("b_h", jnp.zeros((params["w_h"].shape[1],), params["w_h"].dtype))


def _outputs_and_final(kind: str, seq, valid: Array, lengths: Array, reverse: bool):
  """`run_layer`'s results from the time-major carries of every step."""
  final = jax.tree.map(lambda s: s[-1], seq)  # padding leaves the carry as it was
  outputs = jnp.swapaxes(jnp.where(valid[..., None], carry_hidden(kind, seq), 0.0), 0, 1)
  if reverse:
    outputs = _reverse_within_length(outputs, lengths)
  return outputs, final


def run_bidirectional(kind: str, params_fwd: dict, params_bwd: dict, x: Array, lengths: Array,
                      unroll: int = 1, recurrence: str = "scan"):
  """Both directions of a bidirectional layer over x [batch, time, in]:
  ((outputs, final) forward, (outputs, final) backward), as two `run_layer`
  calls give them.

  A GRU with "fused" runs the two directions as two kernel calls on a CPU
  (elsewhere, and at sizes the kernel does not take, as "custom_vjp"). With
  "custom_vjp", both directions run in one loop: their weights and
  (for the backward one, reversed) inputs are stacked on a leading axis and
  the recurrence is `jax.vmap`ped over it, so each step does one batched
  matmul for the two directions, and the layer costs half the loop
  iterations of two separate scans."""
  check_recurrence(recurrence)
  if kind == "gru" and recurrence == "fused" and gru_cpu.takes(params_fwd, x):
    carry = zero_carry(kind, x.shape[0], params_fwd["w_h"].shape[0], x.dtype)

    def kernels(x):  # on a CPU: one kernel call per direction
      return tuple(gru_cpu.kernel_layer(p, x, lengths, carry, r, projected=False)
                   for p, r in ((params_fwd, False), (params_bwd, True)))
    return jax.lax.platform_dependent(x, cpu=kernels, default=lambda x: run_bidirectional(
        kind, params_fwd, params_bwd, x, lengths, unroll, "custom_vjp"))
  if recurrence == "scan":
    return tuple(run_layer(kind, p, project(p, x), lengths, reverse=r, unroll=unroll,
                           recurrence=recurrence)
                 for p, r in ((params_fwd, False), (params_bwd, True)))
  batch, steps = x.shape[:2]
  gates = num_gates(kind)
  xs = (time_major_gates(project(params_fwd, x), gates),
        time_major_gates(_reverse_within_length(project(params_bwd, x), lengths), gates))
  stack = lambda a, b: jax.tree.map(lambda u, v: jnp.stack([u, v]), a, b)  # noqa: E731
  carry = zero_carry(kind, batch, params_fwd["w_h"].shape[0], x.dtype)
  valid = _valid_steps(steps, lengths)
  seq = jax.vmap(functools.partial(recurrent_vjp.carries, kind), in_axes=(0, 0, 0, None, 0))(
      stack(params_fwd["w_h"], params_bwd["w_h"]),
      stack(_recurrent_bias(params_fwd), _recurrent_bias(params_bwd)), stack(*xs), valid,
      stack(carry, carry))
  return tuple(_outputs_and_final(kind, jax.tree.map(lambda s: s[d], seq), valid, lengths,
                                  reverse=bool(d))
               for d in (0, 1))


class Cell(nn.Module):
  """Holds one cell's weights; calling it returns them as a dict.

  w_i: [in_features, gates * features], b_i: [gates * features],
  w_h: [features, gates * features] (orthogonal init per gate),
  b_h: [gates * features] (GRU only: it sits inside the reset gate's product).
  An LSTM's forget-gate bias starts at 1 so early gradients flow through time.
  """
  kind: str
  in_features: int
  features: int

  @nn.compact
  def __call__(self) -> dict:
    gates, h = num_gates(self.kind), self.features
    orth = nn.initializers.orthogonal()

    def recurrent_init(key, shape, dtype=jnp.float32):
      keys = jax.random.split(key, gates)
      return jnp.concatenate([orth(k, (h, h), dtype) for k in keys], axis=1)

    def bias_init(key, shape, dtype=jnp.float32):
      b = jnp.zeros(shape, dtype)
      if self.kind == "lstm":
        b = b.at[h:2 * h].set(1.0)
      return b

    params = {
        "w_i": self.param("w_i", nn.initializers.lecun_normal(), (self.in_features, gates * h)),
        "b_i": self.param("b_i", bias_init, (gates * h,)),
        "w_h": self.param("w_h", recurrent_init, (h, gates * h)),
    }
    if self.kind == "gru":
      params["b_h"] = self.param("b_h", nn.initializers.zeros, (gates * h,))
    return params


def project(params: dict, x: Array) -> Array:
  """`x @ w_i + b_i` for every step at once: [batch, time, gates * hidden]."""
  return x @ params["w_i"] + params["b_i"]


class RecurrentEncoder(nn.Module):
  """Stacked (optionally bidirectional) recurrent layers over embedded input.

  Attributes:
    kind: cell name, one of CELLS.
    in_features: size of the inputs.
    features: hidden size per direction.
    num_layers: stacked layers; layer l > 0 reads layer l-1's outputs
      (both directions concatenated).
    bidirectional: run a backward layer beside each forward one.
    dropout: rate on the outputs of every layer but the last.
    unroll: the scans' `unroll` (see `run_layer`).
    recurrence: how the layers' recurrence is differentiated (RECURRENCES).
  """
  kind: str
  in_features: int
  features: int
  num_layers: int = 1
  bidirectional: bool = False
  dropout: float = 0.0
  unroll: int = 1
  recurrence: str = "scan"

  @property
  def out_features(self) -> int:
    return self.features * (2 if self.bidirectional else 1)

  @nn.compact
  def __call__(self, x: Array, lengths: Array, train: bool = False):
    """Encodes a batch.

    Args:
      x: [batch, time, in_features].
      lengths: int32 [batch].
    Returns:
      outputs: [batch, time, out_features], zero on padding.
      finals: per layer, a tuple of final carries (forward[, backward]).
    """
    finals = []
    in_features = self.in_features
    for layer in range(self.num_layers):
      fwd = Cell(self.kind, in_features, self.features, name=f"layer{layer}_fwd")()
      if self.bidirectional:
        bwd = Cell(self.kind, in_features, self.features, name=f"layer{layer}_bwd")()
        (out_f, final_f), (out_b, final_b) = run_bidirectional(
            self.kind, fwd, bwd, x, lengths, unroll=self.unroll, recurrence=self.recurrence)
        x = jnp.concatenate([out_f, out_b], axis=-1)
        finals.append((final_f, final_b))
      else:
        x, final = encode_layer(self.kind, fwd, x, lengths, unroll=self.unroll,
                                recurrence=self.recurrence)
        finals.append((final,))
      if layer < self.num_layers - 1 and self.dropout > 0:
        # Padding stays exactly zero: dropout only scales or zeroes.
        x = Dropout(self.dropout, deterministic=not train)(x)
      in_features = self.out_features
    return x, tuple(finals)
