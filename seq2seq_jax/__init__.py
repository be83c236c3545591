"""seq2seq-jax: sequence-to-sequence learning in JAX/Flax.

Encoders, attention decoders and Transformers that share one model contract
(`__call__`, `encode`, `init_decode_state`, `decode_step`); see README.md.
"""

__version__ = "0.1.0"
