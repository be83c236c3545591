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
        sources=[f"seq2seq_jax/models/cpu/{name}.cc"
                 for name in ("module", "gru_layer", "bahdanau_decoder")],
        depends=["seq2seq_jax/models/cpu/kernels.h"],
        include_dirs=[os.path.join(os.path.dirname(jaxlib.__file__), "include")],
        extra_compile_args=["-std=c++17", "-O3", "-fvisibility=hidden"],
        language="c++",
        optional=True,
    )
])
