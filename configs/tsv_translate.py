"""Sentence translation from a local tab-separated file, such as the
Tatoeba / manythings.org pairs (https://www.manythings.org/anki/: fra-eng.zip
holds fra.txt, lines "English<TAB>French<TAB>attribution").

Word tokens on both sides, a Transformer (3+3 layers, d_model 256) by
default; 5 % of the distinct source sentences go to valid and 5 % to test by
a hash of the sentence (see the README), so every translation of a sentence
stays in one split and counts as a reference.

Run:
  python train.py --config=configs/tsv_translate.py --workdir=runs/fra \
    --config.data.source=tsv:fra.txt
The GRU encoder-decoder with Bahdanau attention instead:
  python train.py --config=configs/tsv_translate.py --workdir=runs/fra_gru \
    --config.data.source=tsv:fra.txt --config.model.name=rnn_seq2seq
A corpus of any size works as is: the file is read through a line-offset
index (cached next to it), shuffled globally each epoch.
Subwords instead of words (a SentencePiece model trained on the training split):
  --config.data.src_tokenizer=sentencepiece --config.data.tgt_tokenizer=sentencepiece
"""

from configs import default


def get_config():
  config = default.reference_config()
  data = config.data
  data.source = "tsv:fra.txt"  # give your file with --config.data.source=tsv:<path>
  data.valid_fraction = 0.05
  data.test_fraction = 0.05
  data.src_tokenizer = "word"
  data.tgt_tokenizer = "word"
  data.min_freq = 2  # words seen once in training read as <unk>
  data.max_vocab = 30_000
  data.src_boundaries = "8,12,16,24,32,64"
  data.tgt_boundaries = "8,12,16,24,32,64"
  data.too_long = "drop"  # the few very long Tatoeba lines

  model = config.model
  model.name = "transformer"
  model.embed_dim = 256  # used by the GRU choice
  model.dropout = 0.1
  model.encoder.bidirectional = True  # GRU choice: 2 bidirectional layers of 256
  model.decoder.hidden = 512
  model.attention.dim = 256
  t = model.transformer
  t.num_layers = 3
  t.d_model = 256
  t.num_heads = 4
  t.d_ff = 1024
  t.attention_dropout = 0.1
  t.tie_output = True

  train = config.train
  train.batch_size = 128
  train.num_steps = 30_000
  train.learning_rate = 1e-3
  train.warmup_steps = 2_000
  train.decay = "rsqrt"
  train.label_smoothing = 0.1
  train.eval_every = 2_000
  train.checkpoint_every = 1_000

  ev = config.eval
  ev.beam_size = 4
  ev.num_decode_examples = 1_000
  return config
