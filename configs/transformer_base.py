"""The Transformer "base" of Vaswani et al. 2017: 6+6 layers, d_model 512,
8 heads, d_ff 2048, dropout 0.1, label smoothing 0.1, Adam with warmup and
inverse-square-root decay, post-LN and tied target embeddings as in the
paper. Sized for a GPU. Until real translation data lands (the data issue),
it points at a built-in task, character-level addition.

Run:
  python train.py --config=configs/transformer_base.py --workdir=runs/transformer_base
"""

from configs import default


def get_config():
  config = default.reference_config()
  config.data.source = "builtin:addition"  # A real translation corpus once sources support one.
  config.data.src_boundaries = "8,12,16"
  config.data.tgt_boundaries = "8"
  config.model.name = "transformer"
  config.model.dropout = 0.1
  t = config.model.transformer
  t.num_layers = 6
  t.d_model = 512
  t.num_heads = 8
  t.d_ff = 2048
  t.norm = "post"  # As in the paper; "pre" trains more easily without warmup.
  t.tie_output = True  # Output layer shares the target embedding (paper section 3.4).
  config.train.batch_size = 128
  config.train.learning_rate = 512 ** -0.5 * 4000 ** -0.5  # d_model^-0.5 * warmup^-0.5: the paper's peak.
  config.train.warmup_steps = 4_000
  config.train.decay = "rsqrt"
  config.train.label_smoothing = 0.1
  config.train.grad_clip_norm = 0.0  # The paper does not clip.
  config.train.num_steps = 100_000
  config.train.eval_every = 5_000
  config.train.checkpoint_every = 5_000
  return config
