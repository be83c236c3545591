"""A shrunken default config for end-to-end tests: tiny model, few steps.

  python train.py --config=tests/tiny_config.py --workdir=/tmp/tiny
"""

from configs import default


def get_config():
  config = default.reference_config()
  config.data.num_train = 400
  config.data.num_valid = 40
  config.data.num_test = 40
  config.data.src_boundaries = "16,32"  # Two bucket shapes: few compiles, still bucketed.
  config.data.tgt_boundaries = "12"
  # Sizes that are multiples of 16: GRU layers and the decoder loop run on the
  # CPU kernels (where built), as the default run does, and its programs
  # compile in about 30 % less time than the loops'.
  config.model.embed_dim = 16
  config.model.encoder.hidden = 16
  config.model.decoder.hidden = 16
  config.model.attention.dim = 16
  config.train.batch_size = 32
  config.train.num_steps = 8
  config.train.warmup_steps = 2
  config.train.log_every = 2
  config.train.eval_every = 4
  config.train.checkpoint_every = 4
  config.train.progress_bar = False
  config.eval.batch_size = 64
  config.eval.num_samples = 2
  config.eval.num_attention_plots = 2
  return config
