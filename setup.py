"""Builds the one compiled part: the GRU kernel for the CPU
(seq2seq_jax/models/gru_cpu.cc), against the XLA FFI headers that jaxlib
ships. Everything else is in pyproject.toml.

The extension is optional: where it cannot be built (no C++17 compiler, a
platform without the headers), pip still installs the package, and GRU
layers run the pure-JAX recurrence instead (`seq2seq_jax.models.gru_cpu`).
"""

import os

import jaxlib
from setuptools import Extension, setup

setup(ext_modules=[
    Extension(
        "seq2seq_jax.models._gru_cpu",
        sources=["seq2seq_jax/models/gru_cpu.cc"],
        include_dirs=[os.path.join(os.path.dirname(jaxlib.__file__), "include")],
        extra_compile_args=["-std=c++17", "-O3", "-fvisibility=hidden"],
        language="c++",
        optional=True,
    )
])
