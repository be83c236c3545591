"""Loss, schedules and the train step."""

import importlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import default
from seq2seq_jax import models, training
from seq2seq_jax.models.rnn_seq2seq import RNNSeq2Seq
from tests import parallel_worker as worker_module
from tests.train_steps import compiled_step, init_state


def np_log_softmax(x):
  x = np.asarray(x, np.float64)
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def np_cross_entropy(logits, targets, smoothing=0.0):
  """Per-token cross-entropy against (1 - smoothing) * one_hot + smoothing /
  vocab, in NumPy (float64): the reference the loss is checked against."""
  lp = np_log_softmax(logits)
  vocab = lp.shape[-1]
  soft = np.full(lp.shape, smoothing / vocab)
  np.put_along_axis(soft, np.asarray(targets)[..., None], 1.0 - smoothing + smoothing / vocab,
                    axis=-1)
  return -(soft * lp).sum(-1)


def test_masked_cross_entropy_ignores_padding():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 5, 7)).astype(np.float32)
  targets = rng.integers(0, 7, size=(2, 5))
  targets[:, :2] = logits[:, :2].argmax(-1)  # some tokens predicted right
  weights = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.float32)
  real = weights > 0
  loss, sums = training.masked_cross_entropy(jnp.asarray(logits), jnp.asarray(targets),
                                             jnp.asarray(weights))
  nll = np_cross_entropy(logits, targets)
  np.testing.assert_allclose(loss, nll[real].mean(), rtol=1e-6)
  np.testing.assert_allclose(sums["loss_sum"], nll[real].sum(), rtol=1e-6)
  assert float(sums["weight_sum"]) == 8
  correct = np.sum((logits.argmax(-1) == targets) & real)
  assert float(sums["correct_sum"]) == correct >= 4
  # Other targets and logits at the padded positions change nothing.
  targets2, logits2 = targets.copy(), logits.copy()
  targets2[0, 3:] = (targets2[0, 3:] + 1) % 7
  logits2[0, 3:] = rng.normal(size=(2, 7)) * 100.0
  loss2, sums2 = training.masked_cross_entropy(jnp.asarray(logits2), jnp.asarray(targets2),
                                               jnp.asarray(weights))
  assert float(loss2) == float(loss)
  assert {k: float(v) for k, v in sums2.items()} == {k: float(v) for k, v in sums.items()}


def test_label_smoothing_against_numpy():
  rng = np.random.default_rng(3)
  logits = rng.normal(size=(2, 3, 5)).astype(np.float32)
  targets = rng.integers(0, 5, size=(2, 3))
  weights = np.array([[1, 1, 0], [1, 1, 1]], np.float32)
  real = weights > 0
  args = jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights)
  loss, sums = training.masked_cross_entropy(*args, label_smoothing=0.2)
  smoothed = np_cross_entropy(logits, targets, 0.2)
  np.testing.assert_allclose(loss, smoothed[real].sum() / 5, rtol=1e-5)
  # The metric stays the plain likelihood, so perplexities compare.
  np.testing.assert_allclose(sums["loss_sum"], np_cross_entropy(logits, targets)[real].sum(),
                             rtol=1e-5)
  # A train step divides by the global batch's token count instead.
  part, _ = training.masked_cross_entropy(*args, label_smoothing=0.2, divisor=jnp.float32(20.0))
  np.testing.assert_allclose(part, smoothed[real].sum() / 20, rtol=1e-5)


def test_padding_and_filler_rows_get_zero_gradient():
  rng = np.random.default_rng(4)
  logits = jnp.asarray(rng.normal(size=(3, 4, 6)).astype(np.float32))
  targets = jnp.asarray(rng.integers(0, 6, size=(3, 4)))
  weights = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], np.float32)  # row 2: filler
  grad = np.asarray(jax.grad(lambda x: training.masked_cross_entropy(
      x, targets, jnp.asarray(weights), label_smoothing=0.1)[0])(logits))
  assert np.all(grad[weights == 0] == 0.0)
  assert np.all(np.abs(grad[weights > 0]).sum(-1) > 1e-3)


def _train_cfg(**overrides):
  cfg = default.get_config().train
  cfg.update(overrides)
  return cfg


@pytest.mark.parametrize("decay", ["cosine", "linear", "constant"])
def test_schedule_warmup_then_decay(decay):
  cfg = _train_cfg(learning_rate=1e-3, warmup_steps=10, num_steps=110, decay=decay,
                   end_lr_factor=0.1)
  lr = training.learning_rate_schedule(cfg)
  assert float(lr(0)) == 0.0
  np.testing.assert_allclose(float(lr(5)), 5e-4, rtol=1e-6)
  np.testing.assert_allclose(float(lr(10)), 1e-3, rtol=1e-6)
  end = 1e-3 if decay == "constant" else 1e-4
  np.testing.assert_allclose(float(lr(110)), end, rtol=1e-5)
  values = [float(lr(s)) for s in range(10, 111, 10)]
  assert all(b <= a + 1e-12 for a, b in zip(values, values[1:]))


def optax_schedule(cfg):
  """The reference: the schedule built from optax's own functions."""
  peak, warmup = cfg.learning_rate, cfg.warmup_steps
  steps = max(cfg.num_steps - warmup, 1)
  decay = {"cosine": lambda: optax.cosine_decay_schedule(peak, steps, alpha=cfg.end_lr_factor),
           "linear": lambda: optax.linear_schedule(peak, peak * cfg.end_lr_factor, steps),
           "rsqrt": lambda: lambda count: peak * jnp.sqrt(max(warmup, 1) / (count + max(warmup, 1))),
           "constant": lambda: optax.constant_schedule(peak)}[cfg.decay]()
  if warmup == 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


SHIPPED = [importlib.import_module(f"configs.{name}").get_config().train
           for name in ("default", "reference", "transformer", "transformer_base", "g2p_bahdanau")]
SYNTHETIC = [ml_collections.ConfigDict(dict(learning_rate=3e-3, warmup_steps=w, num_steps=333,
                                            end_lr_factor=0.07, decay=d))
             for d in ("cosine", "linear", "rsqrt", "constant") for w in (0, 7)]


@pytest.mark.parametrize("cfg", SHIPPED + SYNTHETIC,
                         ids=lambda c: f"{c.decay}-{c.num_steps}-{c.warmup_steps}")
def test_compiled_rates_equal_optaxs(cfg):
  """Inside a program, with the schedule's numbers as an argument, every
  step's rate is the one optax's schedule gives with them as constants (on
  jaxlib 0.10 on this Xeon the same float, bit for bit; the tolerance allows a
  few roundings, for other CPUs' code)."""
  counts = jnp.arange(cfg.num_steps + 5, dtype=jnp.int32)
  ours = jax.jit(lambda c, v: jax.vmap(training.learning_rate_schedule(cfg, v))(c))(
      counts, training.schedule_values(cfg))
  reference = jax.jit(jax.vmap(lambda c: jnp.asarray(optax_schedule(cfg)(c), jnp.float32)))(counts)
  np.testing.assert_allclose(np.asarray(ours), np.asarray(reference), rtol=1e-6, atol=0)


def test_the_schedule_is_an_argument_of_the_step_not_a_constant():
  """Two schedules, one program: the step compiled for one config's rates
  is the step of any other that changes only its schedule's numbers (the
  second step below loads the first's program). The rate passed is the rate
  applied: Adam's first update is the rate times the sign-like m / sqrt(v),
  so a 3x rate moves every parameter 3x as far."""
  model, cfg, batch = worker_module.tiny_parts(batch_size=8)
  other = ml_collections.ConfigDict(cfg.to_dict())
  other.update(learning_rate=3 * cfg.learning_rate, num_steps=50)
  state = init_state(model, cfg, jax.random.key(0), batch)
  lowered = [jax.jit(training.step_function(train_cfg=c)).lower(
      state, batch, jax.random.key(1), None, training.schedule_values(c)).as_text()
      for c in (cfg, other)]
  assert lowered[0] == lowered[1]
  params = jax.device_get(state.params)
  moved = []
  for c in (cfg, other):
    after, m = compiled_step(train_cfg=c)(init_state(model, cfg, jax.random.key(0), batch), batch,
                                          jax.random.key(1))
    assert float(m["learning_rate"]) == pytest.approx(c.learning_rate)
    moved.append([a - p for a, p in zip(jax.tree.leaves(after.params), jax.tree.leaves(params))])
  for d1, d3 in zip(*moved):
    assert np.abs(d1).max() > 0
    np.testing.assert_allclose(d3, 3 * d1, rtol=1e-4, atol=1e-7)


def reverse_batch(rows):
  rng = np.random.default_rng(0)
  src = rng.integers(4, 12, size=(rows, 5)).astype(np.int32)
  tgt = src[:, ::-1]
  return {"src": src, "src_len": np.full(rows, 5, np.int32),
          "tgt_in": np.concatenate([np.ones((rows, 1), np.int32), tgt], 1),
          "tgt_out": np.concatenate([tgt, np.full((rows, 1), 2, np.int32)], 1),
          "weights": np.ones((rows, 6), np.float32)}


def test_train_step_learns_and_ignores_filler_rows():
  model = RNNSeq2Seq(12, 12, embed_dim=8, encoder_hidden=16, encoder_layers=1,
                     decoder_hidden=16, attention_dim=8)
  batch = reverse_batch(8)
  cfg = _train_cfg(learning_rate=1e-2, warmup_steps=0, num_steps=60, decay="constant")
  state = init_state(model, cfg, jax.random.key(0), batch)
  step = compiled_step()
  losses = []
  for _ in range(60):
    state, m = step(state, batch, jax.random.key(1))
    losses.append(float(m["loss"]))
  assert losses[-1] < 0.5 * losses[0]
  assert int(state.step) == 60 and step.cache_size() == 1  # one compile for one shape
  # Filler rows (weight 0, src_len 0, as the batcher pads a short batch):
  # the same step, to float rounding.
  filler = {k: np.concatenate([v, np.zeros_like(v[:4])]) for k, v in batch.items()}
  plain, m1 = step(init_state(model, cfg, jax.random.key(0), batch), batch, jax.random.key(1))
  padded, m2 = step(init_state(model, cfg, jax.random.key(0), batch), filler, jax.random.key(1))
  for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(padded.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  for name in ("loss", "loss_sum", "weight_sum", "correct_sum", "grad_norm"):
    np.testing.assert_allclose(m1[name], m2[name], rtol=1e-5, err_msg=name)


def test_train_step_minimizes_the_masked_smoothed_cross_entropy():
  """The step's loss, metric sums and gradient are those of
  `masked_cross_entropy` with the run's label smoothing, over a batch with
  padding and a filler row, checked against NumPy."""
  model, cfg, batch = worker_module.tiny_parts(batch_size=8)
  state = init_state(model, cfg, jax.random.key(0), batch)
  params = jax.device_get(state.params)  # the step donates `state`
  _, m = compiled_step(label_smoothing=0.2)(state, batch, jax.random.key(1))

  @jax.jit
  def logits_of(p):  # dropout 0: the step's forward pass
    return model.apply({"params": p}, batch["src"], batch["src_len"], batch["tgt_in"])[0]

  logits, real = np.asarray(logits_of(params)), batch["weights"] > 0
  assert 0 < real.sum() < real.size and not real[-1].any()
  np.testing.assert_allclose(m["loss"], np_cross_entropy(logits, batch["tgt_out"], 0.2)[real].sum()
                             / real.sum(), rtol=1e-5)
  np.testing.assert_allclose(m["loss_sum"], np_cross_entropy(logits, batch["tgt_out"])[real].sum(),
                             rtol=1e-5)
  assert float(m["weight_sum"]) == real.sum()
  grads = jax.jit(jax.grad(lambda p: training.masked_cross_entropy(  # one compile, not op by op
      logits_of(p), batch["tgt_out"], batch["weights"], label_smoothing=0.2)[0]))(params)
  np.testing.assert_allclose(m["grad_norm"], optax.tree.norm(grads), rtol=1e-4)


def test_rsqrt_schedule():
  cfg = _train_cfg(learning_rate=1e-3, warmup_steps=100, num_steps=10_000, decay="rsqrt")
  lr = training.learning_rate_schedule(cfg)
  np.testing.assert_allclose(float(lr(50)), 5e-4, rtol=1e-6)
  np.testing.assert_allclose(float(lr(100)), 1e-3, rtol=1e-6)
  np.testing.assert_allclose(float(lr(400)), 1e-3 * np.sqrt(100 / 400), rtol=1e-5)


@pytest.mark.parametrize("precision", ["float32", "float16"])
def test_nonfinite_step_changes_nothing_but_the_step(precision):
  """A NaN in the batch: parameters, every optimizer leaf (Adam's count
  too) and float16's loss scale come out of the step as they went in."""
  model = RNNSeq2Seq(12, 12, embed_dim=8, encoder_hidden=16, encoder_layers=1,
                     decoder_hidden=16, attention_dim=8)
  rng = np.random.default_rng(0)
  src = rng.integers(4, 12, size=(4, 5)).astype(np.int32)
  batch = {"src": src, "src_len": np.full(4, 5, np.int32),
           "tgt_in": np.concatenate([np.ones((4, 1), np.int32), src], 1),
           "tgt_out": np.concatenate([src, np.full((4, 1), 2, np.int32)], 1),
           "weights": np.ones((4, 6), np.float32)}
  cfg = _train_cfg(warmup_steps=0, num_steps=10, decay="constant", precision=precision)
  step = compiled_step(precision=precision)
  state, _ = step(init_state(model, cfg, jax.random.key(0), batch), batch,
                  jax.random.key(1))  # one real update: moments and count are not zeros
  before = jax.device_get(state)  # the step donates `state`
  poisoned = dict(batch, weights=batch["weights"].copy())
  poisoned["weights"][0, 0] = np.nan
  after, m = step(state, poisoned, jax.random.key(1))
  after = jax.device_get(after)
  assert int(m["nonfinite_steps"]) == 1
  assert int(after.step) == int(before.step) + 1 == 2
  assert isinstance(after, training.DynamicScaleState) == (precision == "float16")
  leaves = jax.tree.leaves_with_path(before.replace(step=0))
  assert any("count" in jax.tree_util.keystr(path) for path, _ in leaves)
  for (path, a), b in zip(leaves, jax.tree.leaves(after.replace(step=0))):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


def test_moving_average_of_the_parameters_follows_its_recurrence():
  """train.ema_decay: after update t (from 0), ema <- d ema + (1 - d) params
  with d = min(decay, (1 + t) / (10 + t)), checked in NumPy over 3 updates
  (the ramp binds at first, then the decay). Averaging changes nothing in
  training: the trained parameters are those of a run without it."""
  model, cfg, batch = worker_module.tiny_parts(batch_size=8)
  averaged = ml_collections.ConfigDict(cfg.to_dict())
  averaged.ema_decay = 0.15
  step = compiled_step()
  plain = init_state(model, cfg, jax.random.key(0), batch)
  state = init_state(model, averaged, jax.random.key(0), batch)
  assert plain.ema_params is None and plain.eval_params is plain.params
  ema = [np.asarray(x, np.float64) for x in jax.tree.leaves(jax.device_get(state.params))]
  for a, b in zip(ema, jax.tree.leaves(jax.device_get(state.ema_params))):
    np.testing.assert_array_equal(a, b)  # the average starts at the initial parameters
  for t, d in enumerate([0.1, 0.15, 0.15]):
    assert float(training.ema_decay_at(0.15, t)) == pytest.approx(d)
    plain, _ = step(plain, batch, jax.random.key(1))
    state, _ = step(state, batch, jax.random.key(1))
    params = jax.tree.leaves(jax.device_get(state.params))
    for a, b in zip(params, jax.tree.leaves(jax.device_get(plain.params))):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)
    ema = [d * e + (1 - d) * np.asarray(p, np.float64) for e, p in zip(ema, params)]
    for want, got in zip(ema, jax.tree.leaves(jax.device_get(state.ema_params))):
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert max(float(np.abs(e - p).max()) for e, p in zip(ema, params)) > 1e-4  # not the params
  assert state.eval_params is state.ema_params and int(state.step) == 3


def test_an_ensembles_members_train_as_each_would_alone():
  """config.model.ensemble_size: two members trained together for three
  steps (the compiled step of a run, clipping binding) end where each ends
  trained alone from its own initial parameters on the same batches: each
  learns from its own loss, clipped to its own norm. The reported loss and
  metric sums are the members' means."""
  member, cfg, batch = worker_module.tiny_parts(batch_size=8)
  cfg.grad_clip_norm = 0.05  # below both members' gradient norms (asserted below)
  ensemble = models.Ensemble((member, member))
  step = compiled_step(train_cfg=cfg)
  state = init_state(ensemble, cfg, jax.random.key(0), batch)
  start = jax.device_get(state.params)
  losses, loss_sums = [], []
  for _ in range(3):
    state, m = step(state, batch, jax.random.key(1))
    losses.append(float(m["loss"]))
    loss_sums.append(float(m["loss_sum"]))
  together = jax.device_get(state.params)

  alone_losses, alone_sums = [], []
  for k in range(2):
    solo = init_state(member, cfg, jax.random.key(0), batch).replace(
        params=start[f"members_{k}"])
    solo = solo.replace(opt_state=solo.tx.init(solo.params))
    alone_losses.append([])
    alone_sums.append([])
    for _ in range(3):
      solo, m = step(solo, batch, jax.random.key(1))
      alone_losses[k].append(float(m["loss"]))
      alone_sums[k].append(float(m["loss_sum"]))
      assert float(m["grad_norm"]) > 2 * cfg.grad_clip_norm
    assert worker_module.max_diff(jax.device_get(solo.params), together[f"members_{k}"]) < 1e-5
  np.testing.assert_allclose(losses, np.mean(alone_losses, axis=0), rtol=1e-5)
  np.testing.assert_allclose(loss_sums, np.mean(alone_sums, axis=0), rtol=1e-5)
  assert alone_losses[0] != alone_losses[1]  # two different models


def test_an_ensemble_is_built_from_the_config():
  config = default.get_config()
  config.model.ensemble_size = 3
  model = models.build_model(config.model, 20, 30)
  assert isinstance(model, models.Ensemble) and len(model.members) == 3
  config.model.ensemble_size = 1
  assert not isinstance(models.build_model(config.model, 20, 30), models.Ensemble)


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_the_optimizer_on_flat_vectors_equals_optax_on_the_tree(optimizer):
  """make_optimizer runs clipping and Adam(W) on the parameters raveled into
  one vector (one per ensemble member): three updates equal optax's own
  chain on the parameter tree, with clipping binding; an ensemble's members
  are each clipped to their own norm."""
  cfg = _train_cfg(optimizer=optimizer, learning_rate=1e-2, warmup_steps=2, num_steps=10,
                   decay="cosine", grad_clip_norm=0.5, weight_decay=0.1)
  rng = np.random.default_rng(0)
  tree = lambda scale: {"dense": {"kernel": scale * rng.normal(size=(3, 4)).astype(np.float32),
                                  "bias": scale * rng.normal(size=(4,)).astype(np.float32)},
                        "embed": scale * rng.normal(size=(5, 2)).astype(np.float32)}
  schedule = optax.warmup_cosine_decay_schedule(0.0, 1e-2, 2, 10, 1e-2 * cfg.end_lr_factor)
  adam = (optax.adamw(schedule, weight_decay=0.1) if optimizer == "adamw"
          else optax.adam(schedule))
  reference = optax.chain(optax.clip_by_global_norm(0.5), adam)
  members = [tree(1.0), tree(1.0)]
  grads = [[tree(3.0) for _ in range(3)], [tree(0.05) for _ in range(3)]]  # clipped; not
  flat = training.make_optimizer(cfg)
  ensemble = {"members_0": members[0], "members_1": members[1]}
  state = flat.init(ensemble)
  assert len(jax.tree.leaves(state)) < 4 * 2  # a few vectors, not a moment per leaf
  alone = [(p, reference.init(p)) for p in members]
  for i in range(3):
    g = {"members_0": grads[0][i], "members_1": grads[1][i]}
    updates, state = flat.update(g, state, ensemble)
    ensemble = optax.apply_updates(ensemble, updates)
    for k in range(2):
      p, s = alone[k]
      u, s = reference.update(grads[k][i], s, p)
      alone[k] = (optax.apply_updates(p, u), s)
  for k in range(2):
    for a, b in zip(jax.tree.leaves(ensemble[f"members_{k}"]), jax.tree.leaves(alone[k][0])):
      np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-7)
  # One model (not an ensemble): its parameters are one vector, clipped as a whole.
  single, s_ref = members[0], reference.init(members[0])
  s_flat = flat.init(single)
  u_flat, _ = flat.update(grads[0][0], s_flat, single)
  u_ref, _ = reference.update(grads[0][0], s_ref, single)
  assert jax.tree.structure(u_flat) == jax.tree.structure(u_ref)
  for a, b in zip(jax.tree.leaves(u_flat), jax.tree.leaves(u_ref)):
    np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-9)
