"""Builds the one compiled part: the CPU kernels of recurrent models
(seq2seq_jax/models/cpu/), against the XLA FFI headers that jaxlib ships.
Everything else is in pyproject.toml.

The extension is optional: where it cannot be built (no C++17 compiler, a
platform without the headers), pip still installs the package, and the
models run their pure-JAX loops instead (`seq2seq_jax.models.cpu_kernels`).
"""

import os

import jaxlib
from setuptools import Extension, setup

setup(ext_modules=[
    Extension(
        "seq2seq_jax.models._cpu_kernels",
        # Each kernel twice, for AVX-512 and (the *_avx2.cc that include it) for
        # AVX2; module.cc picks what the CPU runs (cpu/kernels.h).
        sources=[f"seq2seq_jax/models/cpu/{name}.cc"
                 for name in ("module", "gru_layer", "bahdanau_decoder", "gru_layer_avx2",
                              "bahdanau_decoder_avx2")],
        depends=[f"seq2seq_jax/models/cpu/{name}"
                 for name in ("kernels.h", "gru_layer.cc", "bahdanau_decoder.cc")],
        # jaxlib's headers as system headers: their own warnings are not ours.
        extra_compile_args=["-std=c++17", "-O3", "-fvisibility=hidden", "-isystem",
                            os.path.join(os.path.dirname(jaxlib.__file__), "include")],
        language="c++",
        optional=True,
    )
])
