"""Models, chosen by name from `config.model.name`.

Every model follows the same contract (docs/ARCHITECTURE.md): `__call__` for teacher
forcing, `encode`, `init_decode_state` and `decode_step` for decoding.
"""

from typing import Callable

import flax.linen as nn

from seq2seq_jax.models.ensemble import Ensemble  # several trained models as one
from seq2seq_jax.models.rnn_seq2seq import RNNSeq2Seq
from seq2seq_jax.models.transformer import Transformer


def _rnn_seq2seq(cfg, src_vocab_size: int, tgt_vocab_size: int) -> nn.Module:
  return RNNSeq2Seq(
      src_vocab_size=src_vocab_size,
      tgt_vocab_size=tgt_vocab_size,
      embed_dim=cfg.embed_dim,
      encoder_cell=cfg.encoder.cell,
      encoder_hidden=cfg.encoder.hidden,
      encoder_layers=cfg.encoder.num_layers,
      bidirectional=cfg.encoder.bidirectional,
      decoder=cfg.decoder.type,
      decoder_cell=cfg.decoder.cell,
      decoder_hidden=cfg.decoder.hidden,
      decoder_layers=cfg.decoder.num_layers,
      attention_score=cfg.attention.score,
      attention_normalizer=cfg.attention.normalize,
      attention_topk=cfg.attention.topk,
      attention_dim=cfg.attention.dim,
      input_feeding=cfg.decoder.input_feeding,
      bridge=cfg.bridge,
      dropout=cfg.dropout,
      scan_unroll=cfg.get("scan_unroll", 1),
      recurrence=cfg.get("recurrence", "fused"),
  )


def _transformer(cfg, src_vocab_size: int, tgt_vocab_size: int) -> nn.Module:
  t = cfg.transformer
  return Transformer(
      src_vocab_size=src_vocab_size,
      tgt_vocab_size=tgt_vocab_size,
      num_layers=t.num_layers,
      d_model=t.d_model,
      num_heads=t.num_heads,
      d_ff=t.d_ff,
      dropout=cfg.dropout,
      attention_dropout=t.attention_dropout,
      norm=t.norm,
      positional=t.positional,
      max_len=t.max_len,
      tie_output=t.tie_output,
      share_embeddings=t.share_embeddings,
  )


# name -> builder(model_config, src_vocab_size, tgt_vocab_size)
MODELS: dict[str, Callable[..., nn.Module]] = {
    "rnn_seq2seq": _rnn_seq2seq,
    "transformer": _transformer,
}


def build_model(cfg, src_vocab_size: int, tgt_vocab_size: int) -> nn.Module:
  """Builds `config.model` (names are checked by `config_schema.validate`):
  an `Ensemble` of `ensemble_size` such models, each with its own
  parameters, when that is above 1."""
  model = MODELS[cfg.name](cfg, src_vocab_size, tgt_vocab_size)
  return model if cfg.ensemble_size == 1 else Ensemble((model,) * cfg.ensemble_size)
