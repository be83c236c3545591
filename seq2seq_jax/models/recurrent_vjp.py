"""The recurrence of a cell over time with a hand-written backward pass.

`carries(kind, w_h, b_h, xs, valid, carry0)` returns the carry after every
step, exactly as `recurrent.run_layer`'s `lax.scan` computes it; only its
gradient is computed differently. When JAX differentiates a `lax.scan`, the
transposed loop sums the gradient of every loop-invariant weight inside the
loop: each backward step runs a small [hidden, batch] x [batch, gates*hidden]
matmul and adds it into a weight-gradient buffer, on top of the matmul that
carries the gradient back through time. On a CPU, where a loop iteration
costs about as much as the operations it runs, that doubles the matmuls of
the backward loop. Here the backward loop only carries the gradient through
time and emits each step's gate gradients; the recurrent weights' gradient
is then one [hidden, time*batch] x [time*batch, gates*hidden] matmul after
the loop. The forward loop saves each step's recurrent pre-activations
h @ w_h (+ b_h), one array per step; the backward loop recomputes the gates
from them elementwise, with no matmul but the one that carries the gradient.

Equations (gate order as in `recurrent`; a = pre-activation, dh' the
gradient reaching the step's new state; where a row's step is padding,
`valid` is False, the carry passes through unchanged and so does its
gradient):

  gru:   h' = (1-z) n + z h,  n = tanh(a_n), a_n = x_n + r * hn,  hn = h w_hn + b_hn
         da_n = dh' (1-z) (1-n^2);  da_z = dh' (h-n) z(1-z);  da_r = da_n hn r(1-r)
         dh = dh' z + [da_r, da_z, da_n r] w_h^T
  lstm:  c' = f c + i g,  h' = o tanh(c')
         dc' += dh' o (1-tanh^2 c');  da_i = dc' g i(1-i);  da_f = dc' c f(1-f)
         da_g = dc' i (1-g^2);  da_o = dh' tanh(c') o(1-o);  dc = dc' f
         dh = [da_i, da_f, da_g, da_o] w_h^T
  rnn:   h' = tanh(a);  da = dh' (1-h'^2);  dh = da w_h^T

The tests check every gradient against autodiff of the plain scan.
"""

import functools

import jax
import jax.numpy as jnp

Array = jax.Array


def _project(kind: str, w_h: Array, b_h: Array, carry) -> Array:
  """The recurrent half of the gates' pre-activations: h @ w_h (+ b_h)."""
  if kind == "gru":
    return carry @ w_h + b_h
  return (carry[1] if kind == "lstm" else carry) @ w_h


def _gates(kind: str, x: tuple, hp: Array) -> tuple:
  """A step's gate activations from its inputs x and its recurrent part hp."""
  if kind == "gru":
    hr, hz, hn = jnp.split(hp, 3, axis=-1)
    r = jax.nn.sigmoid(x[0] + hr)
    return r, jax.nn.sigmoid(x[1] + hz), jnp.tanh(x[2] + r * hn), hn
  if kind == "lstm":
    hi, hf, hg, ho = jnp.split(hp, 4, axis=-1)
    return (jax.nn.sigmoid(x[0] + hi), jax.nn.sigmoid(x[1] + hf), jnp.tanh(x[2] + hg),
            jax.nn.sigmoid(x[3] + ho))
  return (jnp.tanh(x[0] + hp),)


def _cell(kind: str, w_h: Array, b_h, carry, x: tuple):
  """One step: (new carry, what the backward pass keeps of it). Only hp is
  kept (one [batch, gates * hidden] array per step, one write): the
  backward loop recomputes the gates from it elementwise, no matmul."""
  hp = _project(kind, w_h, b_h, carry)
  acts = _gates(kind, x, hp)
  if kind == "gru":
    r, z, n, _ = acts
    return (1.0 - z) * n + z * carry, hp
  if kind == "lstm":
    i, f, g, o = acts
    c = f * carry[0] + i * g
    return (c, o * jnp.tanh(c)), hp
  return acts[0], ()


def _select(valid: Array, new, old):
  return jax.tree.map(lambda n, o: jnp.where(valid[:, None], n, o), new, old)


def _forward(kind, w_h, b_h, xs, valid, carry0, save: bool):
  def body(carry, inputs):
    x, m = inputs
    new, hp = _cell(kind, w_h, b_h, carry, x)
    carry = _select(m, new, carry)
    return carry, ((carry, hp) if save else carry)

  _, out = jax.lax.scan(body, carry0, (xs, valid))
  return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def carries(kind: str, w_h: Array, b_h: Array, xs: tuple, valid: Array, carry0):
  """The carry after each step: [time, batch, hidden] (an LSTM: the pair
  (c, h) of such arrays).

  Args:
    kind: "rnn", "gru" or "lstm".
    w_h: [hidden, gates * hidden]; b_h: [gates * hidden] (used by a GRU
      only; pass zeros for the others).
    xs: per gate, the projected inputs [time, batch, hidden].
    valid: bool [time, batch]; False leaves that row's carry unchanged.
    carry0: the initial carry, [batch, hidden] (an LSTM: (c, h)).
  """
  return _forward(kind, w_h, b_h, xs, valid, carry0, save=False)


def _carries_fwd(kind, w_h, b_h, xs, valid, carry0):
  seq, hps = _forward(kind, w_h, b_h, xs, valid, carry0, save=True)
  return seq, (w_h, b_h, xs, valid, carry0, seq, hps)


def _shift(seq, first):
  """[h_0, ..., h_{T-1}] -> [first, h_0, ..., h_{T-2}]: each step's input carry."""
  return jax.tree.map(lambda s, f: jnp.concatenate([f[None], s[:-1]], axis=0), seq, first)


def _gru_step_grad(w_t, grad, g_out, prev, new, acts, mask):
  r, z, n, hn = acts
  dh = grad + g_out
  dh_new = jnp.where(mask, dh, 0.0)
  da_n = dh_new * (1.0 - z) * (1.0 - n * n)
  da_z = dh_new * (prev - n) * z * (1.0 - z)
  da_r = da_n * hn * r * (1.0 - r)
  gates = jnp.concatenate([da_r, da_z, da_n * r], axis=-1)  # the gradient of h @ w_h + b_h
  return jnp.where(mask, dh * z, dh) + gates @ w_t, gates, da_n


def _lstm_step_grad(w_t, grad, g_out, prev, new, acts, mask):
  i, f, g, o = acts
  (dc, dh), (c_prev, _), (c, _) = jax.tree.map(jnp.add, grad, g_out), prev, new
  tc = jnp.tanh(c)
  dh_new = jnp.where(mask, dh, 0.0)
  dc_new = jnp.where(mask, dc + dh_new * o * (1.0 - tc * tc), 0.0)
  da = (dc_new * g * i * (1.0 - i), dc_new * c_prev * f * (1.0 - f),
        dc_new * i * (1.0 - g * g), dh_new * tc * o * (1.0 - o))
  gates = jnp.concatenate(da, axis=-1)
  grad = (jnp.where(mask, dc_new * f, dc), jnp.where(mask, 0.0, dh) + gates @ w_t)
  return grad, gates, ()


def _rnn_step_grad(w_t, grad, g_out, prev, new, acts, mask):
  dh = grad + g_out
  da = jnp.where(mask, dh, 0.0) * (1.0 - new * new)
  return jnp.where(mask, 0.0, dh) + da @ w_t, da, ()


_STEP_GRADS = {"gru": _gru_step_grad, "lstm": _lstm_step_grad, "rnn": _rnn_step_grad}


def _carries_bwd(kind, residuals, grad_seq):
  w_h, b_h, xs, valid, carry0, seq, hps = residuals
  prev = _shift(seq, carry0)
  step_grad = functools.partial(_STEP_GRADS[kind], w_h.T)

  def body(grad, inputs):
    g_out, p, new, x, hp, m = inputs
    acts = _gates(kind, x, hp) if kind != "rnn" else ()
    grad, gates, da_n = step_grad(grad, g_out, p, new, acts, m[:, None])
    return grad, (gates, da_n)

  # Each step writes its gates' gradient once; the inputs' gradient is the
  # same array but for a GRU's candidate gate (da_n, without the factor r).
  grad0, (gates, da_n) = jax.lax.scan(body, jax.tree.map(jnp.zeros_like, carry0),
                                     (grad_seq, prev, seq, xs, hps, valid), reverse=True)
  h_prev = prev[1] if kind == "lstm" else prev
  # The recurrent weights' gradient: one matmul over all steps and rows.
  dw_h = jnp.einsum("tbi,tbj->ij", h_prev, gates)
  db_h = jnp.sum(gates, axis=(0, 1)) if kind == "gru" else jnp.zeros_like(b_h)
  dxs = jnp.split(gates, len(xs), axis=-1)
  if kind == "gru":
    dxs[2] = da_n
  return dw_h, db_h, tuple(dxs), None, grad0


carries.defvjp(_carries_fwd, _carries_bwd)
