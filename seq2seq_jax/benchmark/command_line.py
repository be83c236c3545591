"""The benchmark's command-line flags and the Options they make."""

import dataclasses
from typing import Optional

from seq2seq_jax.errors import ConfigError
from seq2seq_jax.benchmark.options import MODELS, Options, PRESETS, Sizes


# -- command line -----------------------------------------------------------------------

def define_flags(flag_values=None):
  """The command-line flags (defined only when run as a program, so that
  importing this module defines no global flags). flag_values: where to
  define them (default: absl's global FLAGS)."""
  from absl import flags  # noqa: PLC0415
  fv = flags.FLAGS if flag_values is None else flag_values
  d, s = Options(), Sizes()

  def define(kind, name, default, help_text):
    getattr(flags, f"DEFINE_{kind}")(name, default, help_text, flag_values=fv)

  define("list", "models", list(d.models), f"Models to run: {', '.join(MODELS)}.")
  flags.DEFINE_enum("preset", d.preset, ["auto", *PRESETS], "Defaults for lengths, batch "
                    "sizes, the cap and the time limit (auto: cpu on the CPU backend, else "
                    "gpu).", flag_values=fv)
  define("list", "lengths", None, "Length sweep, S = T = L (cpu: 16,...,256; gpu: ...,512); "
         "empty (--lengths=) for none.")
  define("integer", "batch_size", None, "Batch of the length sweep and the date point (64).")
  define("list", "batch_sizes", None, "Batch sweep at the date point (cpu: 16,64,256; gpu: "
         "...,1024).")
  define("list", "date", [str(x) for x in d.date], "Source,target length of the headline "
         "point (like the built-in date task).")
  for name, help_text in [
      ("embed", "RNN embedding size."), ("hidden", "RNN hidden size (encoder and decoder)."),
      ("layers", "RNN encoder layers."), ("decoder_layers", "RNN decoder layers."),
      ("attention_dim", "Bahdanau score's tanh layer."), ("d_model", "Transformer width."),
      ("heads", "Transformer heads."), ("transformer_layers", "Transformer layers (each side)."),
      ("d_ff", "Transformer feed-forward size."), ("src_vocab", "Source vocabulary size."),
      ("tgt_vocab", "Target vocabulary size.")]:
    define("integer", name, getattr(s, name), help_text)
  define("float", "dropout", s.dropout, "Dropout of every model.")
  define("integer", "warmup", d.warmup, "Untimed steps before timing.")
  define("integer", "repeats", d.repeats, "Timed steps per point.")
  define("boolean", "decode", d.decode, "Time greedy and beam decoding.")
  define("integer", "decode_max_len", d.decode_max_len, "Decode on length points up to this.")
  define("integer", "decode_repeats", d.decode_repeats, "Timed decoding calls per point.")
  define("integer", "beam_size", d.beam_size, "Beam of the beam-search timing.")
  define("boolean", "variants", d.variants, "Time the recurrence variants.")
  define("integer", "variant_batch", d.variant_batch, "Batch of the variants.")
  define("integer", "variant_length", d.variant_length, "Length of the variants.")
  define("list", "variant_unrolls", [str(u) for u in d.variant_unrolls],
         "run_layer unrolls to compare.")
  define("float", "max_seconds_per_point", None, "Skip a point estimated to take longer "
         "(cpu: 90, gpu: 120).")
  define("list", "capped_models", list(d.capped_models), "Models run only up to "
         "--capped_max_len.")
  define("integer", "capped_max_len", None, "Longest length of the capped models; 0 = no cap "
         "(cpu: 64, gpu: 0).")
  define("list", "matmul_sizes", [str(n) for n in d.matmul_sizes], "n of the matmul-peak "
         "measurement.")
  define("boolean", "with_torch", d.with_torch, "Also time each model's PyTorch twin.")
  define("integer", "rounds", d.rounds, "JAX and PyTorch take turns at each point in this "
         "many rounds of --repeats / rounds steps each (a drifting machine speed reaches "
         "both alike).")
  define("integer", "torch_threads", d.torch_threads, "PyTorch's intra-op threads.")
  define("boolean", "goals", d.goals, "Report the speed issue's targets, measured (with "
         "--with_torch also at the sizes they name).")
  define("integer", "seed", d.seed, "Seed of the synthetic batches and parameters.")
  define("string", "out_dir", d.out_dir, "Where benchmark.json, .md and .png go.")


def _ints(name: str, values) -> Optional[tuple]:
  if values is None:
    return None
  try:
    return tuple(int(v) for v in values)
  except ValueError:
    raise ConfigError(f"--{name} must be comma-separated integers, got {','.join(values)}") \
        from None


INT_LISTS = ("lengths", "batch_sizes", "date", "variant_unrolls", "matmul_sizes")


def options_from_flags(flag_values) -> Options:
  """Options from parsed flags (every Options and Sizes field has its flag)."""
  value = lambda name: flag_values[name].value
  sizes = Sizes(**{f.name: value(f.name) for f in dataclasses.fields(Sizes)})
  fields = {}
  for f in dataclasses.fields(Options):
    if f.name != "sizes":
      v = value(f.name)
      fields[f.name] = _ints(f.name, v) if f.name in INT_LISTS else (
          tuple(v) if isinstance(v, list) else v)
  return Options(sizes=sizes, **fields)
