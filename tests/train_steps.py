"""The train step that training runs, for tests: `parallel.DataParallel`'s
jit program on this process's devices (one in the pytest process), so a test
of the step tests the program a run compiles, not a copy of it."""

from seq2seq_jax import parallel


def init_state(model, cfg, rng, batch: dict):
  """A fresh train state in the layout the trainer's step takes (replicated
  over the mesh), as `training.create_train_state(model, cfg, rng, batch)`."""
  return parallel.DataParallel("jit").init_state(model, cfg, rng, batch)


def compiled_step(**settings):
  """`parallel.DataParallel("jit").train_step(**settings)`, fed numpy
  batches as the trainer feeds it: step(state, batch, dropout_rng[, gold_prob])
  -> (state, metrics). The state (from `init_state`) is donated, as in a
  run; `step.cache_size()` counts the programs compiled."""
  engine = parallel.DataParallel("jit")
  step = engine.train_step(**settings)

  def run(state, batch, dropout_rng, gold_prob=None):
    return step(state, engine.put_batch(batch), dropout_rng, gold_prob)

  run.cache_size = step.cache_size
  return run
