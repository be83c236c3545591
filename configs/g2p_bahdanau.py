"""Grapheme-to-phoneme on the CMU Pronouncing Dictionary: bidirectional GRU
encoder, GRU decoder with Bahdanau (additive) attention, beam search 4.

Letters in, ARPAbet phonemes out (stress stripped; set
--config.data.cmudict_stress=True to predict AH0/AH1/AH2). Test words are a
fixed 5 % of the dictionary chosen by a hash of the word (see the README).

Run (alone on a 2-vCPU AMD EPYC: 20 to 25 minutes; about 52 estimated on
the slower Intel Xeon; test WER 26.3 to 26.7 %, PER 6.1 %; see the README;
configs/g2p_ensemble.py trains two of these as one ensemble, below 24 %):
  python train.py --config=configs/g2p_bahdanau.py --workdir=runs/g2p_bahdanau
Evaluate greedy and beam search afterwards:
  python -m seq2seq_jax.evaluate --workdir=runs/g2p_bahdanau --beam_sizes=1,4
"""

from configs import default


def get_config():
  config = default.reference_config()
  data = config.data
  data.source = "cmudict"
  data.cmudict_stress = False
  data.src_tokenizer = "char"  # letters
  data.tgt_tokenizer = "word"  # one token per phoneme
  data.src_boundaries = "8,12,16,32"  # words are 1 to 28 characters, median 7
  data.tgt_boundaries = "8,12,16,32"  # pronunciations are 1 to 28 phonemes (+ <eos>)

  model = config.model
  model.embed_dim = 64
  model.dropout = 0.2
  model.encoder.cell = "gru"
  model.encoder.hidden = 192
  model.encoder.num_layers = 2
  model.encoder.bidirectional = True  # 384-wide memory
  model.decoder.cell = "gru"
  model.decoder.hidden = 384
  model.decoder.num_layers = 1
  model.attention.dim = 192

  train = config.train
  train.batch_size = 256  # the step time is mostly per-token loop overhead on a CPU
  train.num_steps = 6_000  # about 12.7 epochs of the 121k training pairs
  train.learning_rate = 3e-3
  train.warmup_steps = 300
  train.decay = "cosine"
  train.end_lr_factor = 0.02
  train.eval_every = 1_500
  train.checkpoint_every = 500
  train.log_every = 100

  ev = config.eval
  ev.beam_size = 4
  ev.num_decode_examples = 1_000  # periodic validation decodes the first 1000 words; the test all
  ev.num_samples = 10
  return config
