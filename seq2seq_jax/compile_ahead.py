"""A run's programs compiled ahead of need, several at once.

A run knows every shape it will use before its first step: the initializer,
one train-step program per bucket shape, and the evaluation programs.
Compiled lazily, each one waits for its first use and then stalls training
for the length of an XLA compile (about 2 s for the default model on a
2-core CPU), one after another. Here each program is lowered and compiled in
a worker thread as soon as its argument shapes are known, in the order the
run will need them. XLA's compiler releases the GIL, so the compiles overlap
each other, the data work of the main thread, and the training steps of the
programs that are already done.

`jax.jit(f).lower(*shapes).compile()` fills the executable cache that a
later call `jax.jit(f)(*args)` with arguments of those shapes reads, so
callers keep calling their jitted function as before; they only `wait` for
its compile to finish first, so that no program is ever compiled twice. With
JAX's persistent compilation cache on, a worker loads the program from disk
instead of compiling it.
"""

import collections
import concurrent.futures
from typing import Any, Hashable, Optional

import jax
import numpy as np
from jax import monitoring

_compiles: collections.Counter = collections.Counter()  # program name -> compiles


def _count_compile(event: str, duration: float, fun_name: str = "", **kwargs) -> None:
  del duration, kwargs
  if event == "/jax/core/compile/backend_compile_duration":
    _compiles[fun_name] += 1


monitoring.register_event_duration_secs_listener(_count_compile)


def compilations(name: Optional[str] = None) -> int:
  """XLA compilations in this process so far, a load from the persistent
  cache included: of every program, or of those named `name` (a jitted
  function `f` is "jit(f)"). Counted from XLA's compile events, so unlike a
  jitted function's executable cache (an LRU shared by every jitted
  function) no entry can be evicted from the count."""
  return sum(_compiles.values()) if name is None else _compiles[name]


def abstract(tree) -> Any:
  """Arrays (numpy or jax) -> `jax.ShapeDtypeStruct`s; None stays None."""
  def one(x):
    if isinstance(x, jax.ShapeDtypeStruct):
      return x
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype)
  return jax.tree.map(one, tree)


def shape_key(batch: dict) -> tuple:
  """What selects a compiled program for a batch: its arrays' shapes."""
  return tuple((k, tuple(np.shape(v))) for k, v in sorted(batch.items()))


class Ahead:
  """Compiles jitted functions for given argument shapes in worker threads.

  `submit(key, fn, *args)` starts one compile, `wait(key)` blocks until it
  is done (re-raising its error, if any). Keys name programs, say
  ("train", shape_key(batch)); a key submitted twice is compiled once.
  """

  def __init__(self, workers: int = 2):
    self._pool = concurrent.futures.ThreadPoolExecutor(
        max_workers=max(1, workers), thread_name_prefix="compile-ahead")
    self._jobs: dict = {}

  def submit(self, key: Hashable, fn, *args) -> None:
    if key in self._jobs:
      return
    shapes = abstract(args)
    self._jobs[key] = self._pool.submit(lambda: fn.lower(*shapes).compile())

  def wait(self, key: Hashable) -> None:
    """Blocks until `key`'s program is compiled; nothing if never submitted."""
    job = self._jobs.get(key)
    if job is not None:
      job.result()

  def close(self) -> None:
    """Drops the compiles not yet started (a run that stops early)."""
    self._pool.shutdown(wait=True, cancel_futures=True)
