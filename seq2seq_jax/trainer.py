"""`train_and_evaluate(config, workdir)`: the training loop.

Order of work, chosen so that a user's mistake costs nothing:
  1. validate the config, check the workdir's checkpoint fits it,
     read the data, build (or reload) tokenizers and the buckets;
  2. only then write anything: config.json, tokenizers, metrics, checkpoints.
A workdir with checkpoints is resumed from the newest one; the data order,
dropout keys and learning rate are functions of the step, so the resumed run
ends exactly where an uninterrupted one would.
"""

import json
import logging
import os
import sys
import time
from typing import Optional

import jax
import ml_collections
import numpy as np

from seq2seq_jax import (compile_ahead, config_schema, decoding, evaluation, faults, models,
                         parallel, plotting, training)
from seq2seq_jax.checkpoints import Checkpoints, has_checkpoints, restore_params
from seq2seq_jax.data import batching, pipeline, sources, tokenizers
from seq2seq_jax.errors import CheckpointError
from seq2seq_jax.metric_writer import MetricWriter, NullWriter
from seq2seq_jax.models import cpu_kernels

class Run:
  """Everything a run derives from its config and data, before any write."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str,
               rows: Optional[slice] = None):
    """rows: the rows of each global training batch this process reads
    (`parallel.process_rows`; default all of them)."""
    self.started = time.time()  # train, valid and test records give the seconds since
    config_schema.validate(config)
    self.config = config
    self.workdir = os.path.abspath(workdir)
    self.ckpt_dir = os.path.join(self.workdir, "checkpoints")
    self.resuming = has_checkpoints(self.ckpt_dir)
    if self.resuming:
      self._check_compatible()

    self.splits = sources.load_splits(config.data)
    self.src_tok, self.tgt_tok = self._tokenizers()
    self.src_boundaries = batching.parse_boundaries(config.data.src_boundaries)
    self.tgt_boundaries = batching.parse_boundaries(config.data.tgt_boundaries)
    # Training batches: the split is read at random (globally shuffled each
    # epoch), each process reading only its `rows` of each global batch,
    # by grain's worker threads ahead of the step.
    self.train_batches = pipeline.Batches(
        self.splits["train"], batching.pair_encoder(self.src_tok, self.tgt_tok),
        self.src_boundaries, self.tgt_boundaries, batch_size=config.train.batch_size,
        seed=config.seed, shuffle=True, too_long=config.data.too_long, rows=rows,
        threads=config.data.loader_threads, prefetch=config.data.prefetch)
    # Evaluation pads every batch to one shape, wide enough for every valid
    # and test example: it compiles once, not once a bucket, and scores
    # every example, whatever data.too_long does in training.
    self.held_out = evaluation.held_out({name: self.splits[name] for name in ("valid", "test")},
                                        self.src_tok, self.tgt_tok, config.data,
                                        config.eval.batch_size)
    eval_src_b, eval_tgt_b = self.held_out["valid"].width
    self.max_decode_len = batching.decode_length(config.eval.max_decode_len,
                                                 config.data.tgt_boundaries)
    self.model = models.build_model(config.model, len(self.src_tok.vocab), len(self.tgt_tok.vocab))
    # A model with a fixed number of positions (a Transformer's max_len)
    # must hold every shape the run will use: checked now, before any work.
    for what, width in (("the training source buckets", self.src_boundaries[-1]),
                        ("the training target buckets", self.tgt_boundaries[-1]),
                        ("the longest valid/test source", eval_src_b),
                        ("the longest valid/test target", eval_tgt_b),
                        ("decoding (eval.max_decode_len)", self.max_decode_len)):
      decoding.check_positions(self.model, width, f"{what} ({width} tokens)")

  def _check_compatible(self):
    meta = Checkpoints(self.ckpt_dir).read_meta()
    # A checkpoint with a moving average holds one more set of parameters;
    # restoring across that change would fail like a damaged file.
    averaged, averaging = bool(meta.get("moving_average", False)), self.config.train.ema_decay > 0
    if meta and averaged != averaging:
      raise CheckpointError(
          f"{self.workdir} holds checkpoints trained "
          + ("with" if averaged else "without") + " a moving average of the parameters "
          f"(train.ema_decay {'> 0' if averaged else '= 0'}), and this config has "
          f"train.ema_decay={self.config.train.ema_decay}; resume with the setting the run "
          "started with, or use another --workdir")
    if meta and meta.get("optimizer_state") != training.OPTIMIZER_STATE:
      raise CheckpointError(
          f"{self.workdir} holds checkpoints written before the optimizer state became one "
          "vector per model (seq2seq-jax before 2026-12-04); their parameters still evaluate "
          "and translate, but training cannot resume from them: use another --workdir")
    saved = meta.get("model_fields")
    if saved is None:
      return
    current = json.loads(json.dumps(config_schema.model_fields(self.config)))
    # Fields newer than the checkpoint are absent from `saved`; their defaults
    # keep the old behaviour, and a non-default choice among them (say, a
    # sentencepiece tokenizer) also changes a field the checkpoint recorded.
    # Only fields the model reads count (dropout, say, may change).
    changed = config_schema.resume_conflicts(saved, current)
    if changed:
      diff = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
      raise CheckpointError(
          f"{self.workdir} holds checkpoints of a different model ({diff}); "
          "use another --workdir or the original config")

  def _tokenizers(self):
    paths = [os.path.join(self.workdir, f"{side}_tokenizer.json") for side in ("src", "tgt")]
    if self.resuming and all(os.path.exists(p) for p in paths):
      return tuple(tokenizers.load_tokenizer(p) for p in paths)
    data = self.config.data
    # The training split may be an index over a file larger than memory: the
    # texts are generators (each one a pass over the split), never lists.
    train = self.splits["train"]

    def make(kind, texts):
      spm = dict(model_type=data.spm_model_type, vocab_size=data.spm_vocab_size,
                 max_sentences=data.spm_max_sentences)
      return tokenizers.make_tokenizer(kind, texts, min_freq=data.min_freq,
                                       max_size=data.max_vocab or None, spm=spm)

    if data.shared_vocab:  # one vocabulary, so embeddings can be shared
      # Source and target of each pair in turn, so that the prefix sentencepiece
      # learns from (spm_max_sentences) holds both languages.
      shared = make(data.src_tokenizer, (text for pair in train for text in pair))
      return shared, shared
    return (make(data.src_tokenizer, (s for s, _ in train)),
            make(data.tgt_tokenizer, (t for _, t in train)))

  def write_setup(self):
    """The first writes of the run: config and tokenizers."""
    os.makedirs(self.workdir, exist_ok=True)
    with open(os.path.join(self.workdir, "config.json"), "w", encoding="utf-8") as f:
      f.write(self.config.to_json_best_effort(indent=2, sort_keys=True) + "\n")
    self.src_tok.save(os.path.join(self.workdir, "src_tokenizer.json"))
    self.tgt_tok.save(os.path.join(self.workdir, "tgt_tokenizer.json"))


def data_report(run: Run) -> dict:
  """What reading the data cost: per split, the examples kept, dropped or
  truncated for length (data.too_long), and the tokens the vocabularies map
  to <unk> (characters or words not seen in training)."""
  report = {}
  splits = {"train": run.train_batches, **{k: v.batches for k, v in run.held_out.items()}}
  for name, batches in splits.items():
    report[name] = {"examples": int(batches.num_examples), "dropped": int(batches.num_dropped),
                    "truncated": int(batches.num_truncated), **batches.unknown_counts}
  return report


def format_data_report(report: dict) -> str:
  """One line: <unk> tokens per split and side, then any length drops."""
  parts, cut = [], []
  for name, r in report.items():
    parts.append(f"{name} {r['src_unknown']:,}/{r['src_tokens']:,} source, "
                 f"{r['tgt_unknown']:,}/{r['tgt_tokens']:,} target")
    if r["dropped"] or r["truncated"]:
      cut.append(f"{name} {r['dropped']:,} dropped, {r['truncated']:,} truncated")
  line = "tokens mapped to <unk>: " + "; ".join(parts)
  if cut:
    line += " | too long (data.too_long): " + "; ".join(cut)
  return line


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       stop_after: Optional[int] = None) -> Optional[dict]:
  """Trains `config` in `workdir` (resuming if it has checkpoints), evaluates
  on the test split, and returns the final test metrics.

  stop_after: end the run after this step with a checkpoint, as a preemption
    would, and skip the final evaluation (returns None); running again
    resumes there.
  """
  config_schema.validate(config)
  cpu_kernels.isa()  # a bad SEQ2SEQ_JAX_CPU_KERNELS fails here, before any write
  parallel.initialize(config.parallel)  # before anything touches a device
  cfg = config.train
  engine = parallel.DataParallel(config.parallel.strategy)
  engine.check_batch_size(cfg.batch_size, cfg.grad_accum_steps)
  run = Run(config, workdir, rows=parallel.process_rows(engine.mesh, cfg.batch_size))
  # Process 0 writes the workdir's files; checkpoints are saved by all.
  main = parallel.is_main_process()
  if main:
    run.write_setup()
  writer = MetricWriter(run.workdir) if main else NullWriter()
  ckpts = Checkpoints(run.ckpt_dir, keep=cfg.keep_checkpoints)
  ahead = compile_ahead.Ahead()
  best = BestKept(run.workdir) if cfg.keep_best else None
  try:
    with faults.StopSignals() as signals:
      return _train(run, writer, ckpts, stop_after, signals, engine, ahead, best)
  finally:
    ahead.close()
    if best is not None:
      best.close()
    ckpts.close()
    writer.close()


class BestKept:
  """train.keep_best: the parameters of the best validation so far (exact
  match, then lower loss), kept in <workdir>/best (one checkpoint, written
  by the checkpoint module, so translate and evaluate read it like any
  other). Its meta holds the score, so a resumed run compares against it."""

  def __init__(self, workdir: str):
    self.directory = os.path.join(workdir, "best")
    self.ckpts = Checkpoints(self.directory, keep=1)
    self.score = None
    if self.ckpts.latest_step() is not None:
      meta = self.ckpts.read_meta()
      if "valid_exact_match" in meta:
        self.score = (meta["valid_exact_match"], -meta["valid_loss"])

  def offer(self, values: Optional[dict], state, step: int) -> None:
    """Keeps `state` if its validation `values` (known to process 0; None
    elsewhere) beat the best so far; every process takes part in the save."""
    better = values is not None and (
        self.score is None or (values["exact_match"], -values["loss"]) > self.score)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
      better = bool(multihost_utils.broadcast_one_to_all(np.int32(better)))
    if better:
      if values is not None:
        self.score = (values["exact_match"], -values["loss"])
      self.ckpts.save(state, {"step": step, "valid_exact_match": values and values["exact_match"],
                              "valid_loss": values and values["loss"]})

  def params(self, like):
    """(parameters, step) of the best validation, in the layout of `like`;
    (like, None) if no validation has run."""
    self.ckpts.wait()
    if self.ckpts.latest_step() is None:
      return like, None
    return restore_params(self.directory, parallel.DataParallel.eval_params_shape(like))

  def close(self) -> None:
    self.ckpts.close()


def _signal_agreed(signals: faults.StopSignals, done: int, every: int) -> Optional[str]:
  """The stop signal to act on after step `done`, or None.

  One process: the signal it received, at once. Several processes must stop
  at the same step (checkpoint writes and steps are collective; a process
  that left alone would leave the others waiting forever), so every `every`
  steps (the log points, where the host syncs anyway) they exchange what
  each received, and all stop if any did: a preemption notice reaching one
  host stops the whole run within `every` steps.
  """
  if jax.process_count() == 1:
    return signals.requested
  if done % every:
    return None
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  received = multihost_utils.process_allgather(np.int32(bool(signals.requested)))
  if not np.any(received):
    return None
  return signals.requested or "a stop signal to process " + ", ".join(
      str(i) for i in np.flatnonzero(received))


def _train(run: Run, writer: MetricWriter, ckpts: Checkpoints, stop_after: Optional[int],
           signals: faults.StopSignals, engine: parallel.DataParallel,
           ahead: compile_ahead.Ahead, best: Optional[BestKept]):
  config, cfg = run.config, run.config.train
  main = parallel.is_main_process()
  ss = cfg.scheduled_sampling
  scheduled = ss.schedule != "none"
  # Every program of the run starts compiling now, in worker threads and in
  # the order of need (compile_ahead): the initializer, one train step per
  # bucket shape, then evaluation.
  init = engine.initializer(run.model, cfg)
  seed = np.int32(config.seed)
  # The initializer needs shapes only: a filler batch of the first step's
  # shape (nothing is read; the first batch itself comes from the loader).
  first = evaluation.model_batch(batching.fill_batch(
      run.train_batches.shape_at(0), cfg.batch_size, ()))
  init_args = (seed, first["src"], first["src_len"], first["tgt_in"])
  # Traced once, here: the compile below reuses the trace (JAX caches it by
  # argument types), where compiling first would trace it twice at once.
  state_shape, key_shape = jax.eval_shape(init, *init_args)
  ahead.submit("init", init, *init_args)
  train_step = engine.train_step(cfg.label_smoothing, scheduled, ss.predictions == "sample",
                                 cfg.grad_accum_steps, cfg.precision,
                                 train_cfg=cfg)
  shapes = run.train_batches.batch_shapes()
  first_shape = (first["src"].shape[1], first["tgt_in"].shape[1])
  shapes.sort(key=lambda s: s != first_shape)  # the first step's program first
  train_step.compile_ahead(ahead, state_shape, shapes, cfg.batch_size, key_shape,
                           np.float32(1.0) if scheduled else None)
  evaluator = evaluation.Evaluator(run.model, run.held_out, run.tgt_tok, config.eval,
                                   run.max_decode_len, g2p=config.data.source == "cmudict")
  evaluator.compile_ahead(ahead, engine.eval_params_shape(state_shape.params))
  ahead.wait("init")
  state, dropout_rng = init(*init_args)
  if run.resuming:
    state = ckpts.restore(state)
  start_step = int(jax.device_get(state.step))
  writer.resume(start_step)  # an interrupted run's events after it are redone: drop them
  num_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(state.params))
  logging.info("model %s: %d parameters; %d training examples in buckets %s; %s",
               config.model.name, num_params, run.train_batches.num_examples,
               run.train_batches.bucket_counts(),
               f"resuming at step {start_step}" if start_step else "starting")
  if main:
    print(f"{num_params:,} parameters, {run.train_batches.num_examples:,} training examples, "
          f"{len(run.train_batches.batch_shapes())} bucket shapes; "
          + (f"resuming from step {start_step}" if start_step else "training from scratch")
          + engine.describe(), flush=True)
  report = data_report(run)
  if main:
    print(format_data_report(report), flush=True)
    writer.write(start_step, "data", report)
  state = engine.to_device(state)
  meta = {"model_fields": config_schema.model_fields(config),
          "moving_average": cfg.ema_decay > 0, "optimizer_state": training.OPTIMIZER_STATE}

  pbar = None
  if cfg.progress_bar and main:
    from tqdm import tqdm
    # Redraw often on a terminal, rarely in a log file.
    pbar = tqdm(total=cfg.num_steps, initial=start_step, unit="step", dynamic_ncols=True,
                mininterval=0.5 if sys.stderr.isatty() else 30.0)
  pending = []
  last_time, last_step, paused, waited = time.time(), start_step, 0.0, 0.0
  stream = run.train_batches.iterate(start_step)
  signalled = None  # the stop signal acted on (see _signal_agreed)
  for step in range(start_step, cfg.num_steps):
    wait_start = time.perf_counter()
    batch = next(stream)  # built ahead by the loader's threads; waiting here is input-bound
    waited += time.perf_counter() - wait_start
    gold_prob = np.float32(training.gold_probability(ss, step)) if scheduled else None
    state, step_metrics = train_step(state, engine.put_batch(evaluation.model_batch(batch)),
                                     dropout_rng, gold_prob)
    pending.append(step_metrics)
    done = step + 1
    if pbar is not None:
      pbar.update(1)
    # A stop (stop_after, SIGTERM, Ctrl-C) ends the run after this step: its
    # metrics are logged, a checkpoint written, periodic evaluation skipped.
    signalled = _signal_agreed(signals, done, cfg.log_every)
    stopping = (stop_after is not None and done >= stop_after) or bool(signalled)
    if done % cfg.log_every == 0 or done == cfg.num_steps or stopping:
      fetched = jax.device_get(pending)  # the only host sync between log points
      pending = []
      skipped = faults.check_finite(fetched, done - len(fetched), cfg.nonfinite,
                                    run.train_batches.batch_at, ckpts.latest_step)
      raw, fetched = fetched, [m for m in fetched if not int(m["nonfinite_steps"])]  # skipped: not averaged
      elapsed = max(time.time() - last_time - paused, 1e-9)  # training time only
      sums = {k: sum(float(m[k]) for m in fetched) for k in ("loss_sum", "weight_sum", "correct_sum")}
      values = training.summarize(sums)
      values["grad_norm"] = float(np.mean([m["grad_norm"] for m in fetched])) if fetched else 0.0
      values["nonfinite_steps"] = skipped
      values["learning_rate"] = float(raw[-1]["learning_rate"])  # the last step's
      if scheduled:
        values["gold_prob"] = training.gold_probability(ss, done - 1)
        values["gold_fraction"] = (float(np.mean([m["gold_fraction"] for m in fetched]))
                                   if fetched else 0.0)
      values["steps_per_second"] = (done - last_step) / elapsed
      values["input_wait_share"] = min(waited / elapsed, 1.0)  # of the training time
      values["target_tokens_per_second"] = sums["weight_sum"] / elapsed
      values["elapsed_seconds"] = time.time() - run.started
      last_time, last_step, paused, waited = time.time(), done, 0.0, 0.0
      writer.write(done, "train", values)
      if pbar is not None:
        pbar.set_postfix(loss=f"{values['loss']:.4f}",
                         tok_s=f"{values['target_tokens_per_second']:.0f}")
    pause_start = time.time()
    if (done % cfg.eval_every == 0 or done == cfg.num_steps) and not signalled:
      values = (_periodic_eval(run, evaluator, writer, engine.eval_params(state), done)
                if main else None)
      if best is not None:
        best.offer(values, engine.to_host(state), done)
    if jax.process_count() == 1:  # also a signal during evaluation
      signalled = signalled or signals.requested
      stopping = stopping or bool(signalled)
    if done % cfg.checkpoint_every == 0 or done == cfg.num_steps or stopping:
      ckpts.save(engine.to_host(state), meta)
    paused += time.time() - pause_start  # evaluation is not training throughput
    if stopping:
      break
  if pbar is not None:
    pbar.close()
  ckpts.wait()
  state = engine.to_host(state)
  step = int(jax.device_get(state.step))
  if signalled or (stop_after is not None and step < cfg.num_steps):
    why = f"{signalled}: " if signalled else ""
    print(f"{why}stopped at step {step} with a checkpoint in {ckpts.directory}; "
          "run the same command again to resume", flush=True)
    return None
  params = parallel.DataParallel.local_params(state)
  best_step = None
  if best is not None:  # every process restores; process 0 evaluates
    params, best_step = best.params(params)
  if not main:
    return None
  return _final_eval(run, evaluator, writer, state, train_step, params, best_step)


def _periodic_eval(run: Run, evaluator: evaluation.Evaluator, writer: MetricWriter, params, step: int):
  values, _ = evaluator(params, "valid", run.config.eval.num_decode_examples)
  values["elapsed_seconds"] = time.time() - run.started
  writer.write(step, "valid", values)
  logging.info("step %d valid: %s", step, values)
  _plot(run, evaluator, writer, params, step)
  return values


def _plot(run: Run, evaluator: evaluation.Evaluator, writer: MetricWriter, params, step: int):
  count = run.config.eval.num_attention_plots
  if count:
    # A few fixed test examples, so the pictures of successive evals compare.
    decoded = evaluator.decode_first(params, "test", count)
    path = os.path.join(run.workdir, "attention", f"step_{step}.png")
    if plotting.save_decoded_attention(path, decoded, run.src_tok, run.tgt_tok):
      writer.image(step, "attention", plotting.figure_to_array(path))


def _final_eval(run: Run, evaluator: evaluation.Evaluator, writer: MetricWriter, state, train_step,
                params, best_step: Optional[int]) -> dict:
  step = int(jax.device_get(state.step))
  values, decoded = evaluator(params, "test")
  if best_step is not None:
    values["best_step"] = best_step  # train.keep_best: these parameters were evaluated
  values["train_step_compilations"] = train_step.compilations()
  values["train_bucket_shapes"] = len(run.train_batches.batch_shapes())
  values["compilations_total"] = compile_ahead.compilations()
  values["elapsed_seconds"] = time.time() - run.started
  writer.write(step, "test", values)
  samples_path = os.path.join(run.workdir, "samples.txt")
  with open(samples_path, "w", encoding="utf-8") as f:
    f.write("source\thypothesis\treference\n")
    for d in decoded:
      f.write(f"{d['source']}\t{d['hypothesis']}\t{' | '.join(d['references'])}\n")
  writer.text(step, "samples", "\n".join(
      f"{d['source']} -> {d['hypothesis']} (ref {d['reference']})"
      for d in decoded[:run.config.eval.num_samples]))
  g2p = (f"WER {100 * values['wer']:.2f}%, PER {100 * values['per']:.2f}%, "
         if "wer" in values else "")
  lines = [
      f"test after {step} steps"
      + (f" (the best validation's parameters, step {best_step})" if best_step is not None else "")
      + f": exact match {100 * values['exact_match']:.2f}% "
      f"({values['decoded_examples']} examples), {g2p}BLEU {values['bleu']:.2f}, "
      f"chrF {values['chrf']:.2f}, token accuracy {100 * values['token_accuracy']:.2f}%, "
      f"perplexity {values['perplexity']:.4f}",
      f"  BLEU signature: {values['bleu_signature']}",
      f"  XLA compilations: {values['compilations_total']} in total, "
      f"{values['train_step_compilations']} of the train step for "
      f"{values['train_bucket_shapes']} bucket shapes",
  ]
  for d in decoded[:run.config.eval.num_samples]:
    mark = "ok " if d["hypothesis"] in d["references"] else "BAD"
    lines.append(f"  [{mark}] {d['source']!r} -> {d['hypothesis']!r} (reference {d['reference']!r})")
  lines.append(f"workdir: {run.workdir} (samples.txt has every test translation)")
  print("\n".join(lines), flush=True)
  return values
