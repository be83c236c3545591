"""Several trained models decoded as one, over the model contract.

  model = Ensemble((model_a, model_b))
  params = {"members_0": params_a, "members_1": params_b}

An `Ensemble` is itself a model of the contract (docs/ARCHITECTURE.md), so
greedy decoding, beam search, sampling, `evaluate` and `translate` take it as
they take any model. Its "logits" at each step are the members' mean
log-probabilities,

  logits = (1/K) sum_k log_softmax(logits_k),

so a softmax over them (as beam search takes) is the normalized geometric
mean of the members' distributions: beam search ranks hypotheses by the
summed log-probabilities of all members. The members may differ in
architecture (a GRU with attention and a Transformer, say) but must share
the source and target vocabularies. Attention weights are the members' mean
when they all have the same shape, else the first member's.

Trained as one model (config.model.ensemble_size = K, `models.build_model`),
the members learn independently: teacher forcing also returns each member's
own logits (aux["member_logits"]), the train step's objective is the sum of
the members' losses, and gradient clipping applies to each member's
gradients on its own (`clip_each_member`), so each member takes the
updates it would take alone on the same batches. Only the initialization
and the dropout masks differ between members.
"""

from collections.abc import Mapping
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

Array = jax.Array


def mean_log_probs(logits: Sequence[Array]) -> Array:
  """(1/K) sum_k log_softmax(logits_k), in float32."""
  return sum(jax.nn.log_softmax(l.astype(jnp.float32), axis=-1) for l in logits) / len(logits)


def member_names(tree) -> Optional[list]:
  """["members_0", ...] when `tree` (parameters, or anything shaped like
  them) is an Ensemble's, else None."""
  if not isinstance(tree, Mapping) or not tree:
    return None
  names = [f"members_{i}" for i in range(len(tree))]
  return names if set(tree) == set(names) else None


def clip_each_member(max_norm: float) -> optax.GradientTransformation:
  """`optax.clip_by_global_norm`, with an ensemble's members each clipped to
  their own global norm, as each would be trained alone."""
  clip = optax.clip_by_global_norm(max_norm)

  def update(updates, state, params=None):
    del params
    names = member_names(updates)
    if names is None:
      return clip.update(updates, state)
    return {k: clip.update(updates[k], state)[0] for k in names}, state

  return optax.GradientTransformation(clip.init, update)


def _mean_attention(weights: Sequence[Optional[Array]]) -> Optional[Array]:
  if any(w is None for w in weights):
    return next((w for w in weights if w is not None), None)
  if len({w.shape for w in weights}) > 1:
    return weights[0]
  return sum(weights) / len(weights)


class Ensemble(nn.Module):
  members: Sequence[nn.Module]

  def __post_init__(self):
    # Each member becomes its own submodule (`members_i`) with its own
    # parameters, even when one module object is passed twice.
    object.__setattr__(self, "members", tuple(m.clone() for m in self.members))
    super().__post_init__()

  @nn.nowrap
  def check_positions(self, length: int, what: str) -> None:
    for member in self.members:
      check = getattr(member, "check_positions", None)
      if check is not None:
        check(length, what)

  def encode(self, src: Array, src_len: Array, train: bool = False) -> tuple:
    return tuple(m.encode(src, src_len, train=train) for m in self.members)

  def init_decode_state(self, memory: tuple) -> tuple:
    return tuple(m.init_decode_state(mem) for m, mem in zip(self.members, memory))

  def decode_step(self, state: tuple, token: Array):
    steps = [m.decode_step(s, token) for m, s in zip(self.members, state)]
    return (mean_log_probs([s[0] for s in steps]), tuple(s[1] for s in steps),
            _mean_attention([s[2] for s in steps]))

  def __call__(self, src: Array, src_len: Array, tgt_in: Array, train: bool = False,
               tgt_len: Optional[Array] = None):
    outs = [m(src, src_len, tgt_in, train=train, tgt_len=tgt_len) for m in self.members]
    attention = _mean_attention([aux.get("attention") for _, aux in outs])
    members = tuple(logits for logits, _ in outs)
    return mean_log_probs(members), {"attention": attention, "member_logits": members}
