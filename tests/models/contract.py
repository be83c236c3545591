"""Helpers shared by the model-contract tests."""

import numpy as np


def decode_step_by_step(model, variables, src, src_len, tgt_in):
  """Feeds tgt_in one token at a time through encode / init_decode_state /
  decode_step; returns logits [batch, tgt, vocab] and the per-step attention
  (a list, entries None for models without attention)."""
  memory = model.apply(variables, src, src_len, method=model.encode)
  state = model.apply(variables, memory, method=model.init_decode_state)
  logits, attention = [], []
  for t in range(tgt_in.shape[1]):
    lg, state, w = model.apply(variables, state, tgt_in[:, t], method=model.decode_step)
    logits.append(lg)
    attention.append(w)
  return np.stack(logits, 1), attention
