"""Training and decoding speed of the models: scan RNNs against attention.

  python -m seq2seq_jax.benchmark                      # all models, CPU preset
  python -m seq2seq_jax.benchmark --models=gru_bahdanau,transformer --with_torch
  python -m seq2seq_jax.benchmark --preset=gpu --out_dir=benchmark_gpu

Writes to --out_dir (default `benchmark_out`): `benchmark.json` (everything),
`benchmark.md` (tables, with the command, machine and date on top) and
`date_point.png` and `step_time_vs_length.png`; prints the same tables on the terminal.

What is measured, for each model at each point (batch B, source length S,
target length T) on synthetic batches in the batcher's exact format:

* compile time of the real train step (`training.step_function`, jitted with
  the state donated, as `parallel.DataParallel` jits it): `lower` and
  `compile` separately;
* step time after --warmup steps, --repeats times, each call ended by
  `jax.block_until_ready`: min / median / max ms, and target tokens per
  second (real target tokens, i.e. the sum of `weights`, over the median);
* FLOPs per train step, counted analytically (`analytic_flops`: matmuls only,
  2*m*n*k, over the padded lengths, forward x 3 for forward + backward;
  the GRU kernels skip padded steps, so for the GRU models this counts more
  than is computed), the FLOP/s this achieves and its fraction of the
  machine's matmul peak, measured at start-up (`measure_matmul_peak`). XLA's
  own count (`compiled.cost_analysis()`) is recorded beside it as a
  cross-check; it counts the body of a loop (`lax.scan`, `while_loop`) once,
  not once per time step, so for recurrent models it is far below the
  analytic count, while for the Transformer (no loop) the two agree up to
  the elementwise work XLA also counts;
* memory: the device's `peak_bytes_in_use` where the backend reports it
  (GPU, TPU: the process-wide peak so far, not per point), otherwise the
  process's peak RSS (`ru_maxrss`, also process-wide) and current RSS; and
  per point XLA's `memory_analysis()` of the compiled step (temp + argument +
  output bytes);
* decoding throughput in sentences/s, greedy and beam --beam_size
  (`decoding.jit_decode`, compiled first and timed separately, median of
  --decode_repeats). Only at the headline date point and on length points
  up to --decode_max_len, to bound the time. The models are untrained, so a
  row stops when it happens to emit <eos>: the loop iterations run are
  recorded (`steps`) beside the throughput.

Sweeps:
* the date point (--date, source 32 and target 12 like the built-in date
  task) at --batch_size: the headline table;
* lengths (--lengths, S = T = L) at --batch_size (--lengths= for none);
* batch sizes (--batch_sizes) at the date point.
--preset sets the defaults of the lengths, batch sizes, cap and time limit
below: "cpu" (lengths 16-256, batches 16,64,256), "gpu" (lengths 16-512,
batches 16-1024, no cap) or "auto" (the default: "cpu" on JAX's CPU backend,
else "gpu"); an explicit flag wins. A point is skipped (recorded with the
reason) when its estimated time, the previous point of the same sweep
scaled by the ratio of analytic FLOPs, exceeds --max_seconds_per_point;
the longer points of that sweep are then skipped too. The CPU preset also
caps the rnn_* and lstm_* models (--capped_models) at lengths <=
--capped_max_len (64): the GRU models and the Transformer carry the
long-sequence comparison, and every point costs compilations (a train step,
its initialization and, where decoded, greedy and beam search: several
seconds each on 2 cores), which dominate a CPU run. With these defaults a
run of all models takes roughly a quarter of an hour on a 2-core machine
(more with --with_torch, which times every model's twin at every point);
--decode_max_len, --lengths and --models shorten it.

Recurrence variants (--variants): one GRU encoder layer (--variant_batch x
--variant_length, --embed inputs, --hidden units), forward + backward
(`jax.grad` of the sum of the outputs with respect to parameters and
inputs): `recurrent.run_layer` at several `unroll`s; the same layer as
`flax.linen.RNN(nn.GRUCell)` (`nn.scan` inside, input projection inside the
step) against our hand-written scan (input projection hoisted); and, on a GPU
only, cuDNN's LSTM (`jax.experimental.rnn`) against our LSTM layer.

--with_torch times, at every point, the PyTorch twin of each model
(`torch_twins`, `torch_rnn_twins`: the same function written the way PyTorch
users write it; the report describes each in a line) on the same NumPy
batches, and reports torch / jax (above 1: JAX is faster) and both parameter
counts. The two are timed in turns, since a shared machine's speed drifts:
after their warm-ups, --rounds rounds of each side's share of --repeats
steps, the order swapped every round; the median is over all timed steps.
PyTorch is imported only then, and stays optional. --goals compares the
results with the speed issue's targets (`GOALS`; reported, never
asserted); with --with_torch it adds the points the targets name beside the
headline: GRU+Bahdanau with hidden 64 and 1+1 layers, and the Transformer at
dropout 0 and 0.1.

The default sizes are the targets': RNNs embed 64, hidden 256, 2 encoder + 2
decoder layers, attention 128; Transformer d_model 256, 4 heads, 2+2 layers,
FFN 4x; dropout 0.1. The date point, (32, 12) at batch 64 with vocabularies
40/16, is the built-in date task's largest length bucket (its sources are
up to 28 characters, padded to 32; its targets 10 characters + <eos>, padded
to 12) and its character vocabularies.

The package, one job per file:
  options.py       models, sizes, presets and the run's Options
  models.py        the benchmarked models and their synthetic batches
  machine.py       FLOP counts, the matmul peak, memory, XLA's accounting
  timing.py        timing train steps and decoding; JAX and PyTorch in turns
  goals.py         the speed issue's targets and the ratios held against them
  sweep.py         which points to measure, and measuring one
  report.py        tables, plots and the files a run writes
  runner.py        run(options): the whole benchmark
  command_line.py  flags -> Options;  __main__.py: the command
  torch_twins.py, torch_rnn_twins.py  the PyTorch twins (torch is imported only there)
"""

from seq2seq_jax.benchmark.options import (CAPPED_MODELS, MODELS, PRESETS, RNN_MODELS, Options,
                                           Sizes, validate)
from seq2seq_jax.benchmark.models import build_model, optimizer_config, synthetic_batch, twin_sizes
from seq2seq_jax.benchmark.machine import analytic_flops, machine_info, measure_matmul_peak
from seq2seq_jax.benchmark.timing import TrainStep, time_calls, time_decode, time_turns
from seq2seq_jax.benchmark.goals import GOALS, Goal, compute_goals
from seq2seq_jax.benchmark.sweep import plan
from seq2seq_jax.benchmark.report import markdown_report, text_report, write_outputs
from seq2seq_jax.benchmark.runner import run
from seq2seq_jax.benchmark.command_line import define_flags, options_from_flags

__all__ = [
    "CAPPED_MODELS", "MODELS", "PRESETS", "RNN_MODELS", "Options", "Sizes", "validate",
    "build_model", "optimizer_config", "synthetic_batch", "twin_sizes", "analytic_flops",
    "machine_info", "measure_matmul_peak", "TrainStep", "time_calls", "time_decode",
    "time_turns", "GOALS", "Goal", "compute_goals", "plan", "markdown_report", "text_report",
    "write_outputs", "run", "define_flags", "options_from_flags",
]
