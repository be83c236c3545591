"""Portuguese -> English TED talks (Qi et al. 2018, about 52k training
pairs) from TensorFlow Datasets, SentencePiece subwords, a Transformer
(3+3 layers, d_model 256, pre-LN, tied output layer). BLEU is sacrebleu on
the detokenized output.

Prepare the data once (downloads about 130 MB). Without TensorFlow:
  python -m seq2seq_jax.data.tfds_source ted_hrlr_translate/pt_to_en
or, with TensorFlow installed, TFDS's own command line:
  tfds build ted_hrlr_translate/pt_to_en --file_format=array_record
(add --data_dir=DIR to either, and then --config.data.tfds_data_dir=DIR).

Run:
  python train.py --config=configs/tfds_translate.py --workdir=runs/tfds_translate

The GRU encoder-decoder with Bahdanau attention on the same data:
  python train.py --config=configs/tfds_translate.py --workdir=runs/tfds_gru \
    --config.model.name=rnn_seq2seq --config.model.embed_dim=256 \
    --config.model.encoder.bidirectional=True

Other TFDS translation sets: --config.data.source=tfds:wmt14_translate/de-en
(prepared the same way; TFDS data sources are random access, so a large
corpus is read example by example, never held in memory).
"""

from configs import default


def get_config():
  config = default.reference_config()
  data = config.data
  data.source = "tfds:ted_hrlr_translate/pt_to_en"
  data.tfds_keys = ""  # The dataset's supervised keys: pt -> en.
  data.tfds_splits = "train,validation,test"
  data.src_tokenizer = data.tgt_tokenizer = "sentencepiece"
  data.spm_model_type = "unigram"
  data.spm_vocab_size = 8000  # One vocabulary for Portuguese and English.
  data.shared_vocab = True
  data.src_boundaries = "16,24,32,48,64,128"  # SentencePiece tokens; most TED sentences are under 64.
  data.tgt_boundaries = "16,24,32,48,64,128"
  data.too_long = "truncate"  # The few longer ones are cut rather than dropped from the test set.

  config.model.name = "transformer"
  config.model.dropout = 0.1
  t = config.model.transformer
  t.num_layers = 3
  t.d_model = 256
  t.num_heads = 4
  t.d_ff = 1024
  t.max_len = 128
  t.tie_output = True  # With the shared vocabulary, model.transformer.share_embeddings=True also works.
  # For the GRU + attention model (model.name = "rnn_seq2seq").
  config.model.encoder.hidden = 256
  config.model.decoder.hidden = 256
  config.model.attention.dim = 256

  train = config.train
  train.batch_size = 64
  train.num_steps = 30_000
  train.learning_rate = 1e-3
  train.warmup_steps = 4_000
  train.decay = "rsqrt"
  train.label_smoothing = 0.1
  train.eval_every = 2_000
  train.checkpoint_every = 2_000
  config.eval.num_decode_examples = 500  # Periodic BLEU on part of validation; the final test uses all.
  config.eval.batch_size = 128
  return config
