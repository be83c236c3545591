// The extension module `seq2seq_jax.models._cpu_kernels` (built by setup.py):
// avx512() says whether this CPU can run the kernels; handlers() gives their
// XLA FFI handlers as capsules for jax.ffi.register_ffi_target (none off
// x86-64). Nothing here is compiled for AVX-512, so it imports anywhere.
#include <Python.h>

#include <utility>

#include "kernels.h"

#ifdef SEQ2SEQ_CPU_KERNELS
// Defined by XLA_FFI_DEFINE_HANDLER_SYMBOL in gru_layer.cc and
// bahdanau_decoder.cc.
extern "C" {
XLA_FFI_Error* GruLayerForward(XLA_FFI_CallFrame*);
XLA_FFI_Error* GruLayerBackward(XLA_FFI_CallFrame*);
XLA_FFI_Error* BahdanauDecoderForward(XLA_FFI_CallFrame*);
XLA_FFI_Error* BahdanauDecoderBackward(XLA_FFI_CallFrame*);
}
#endif

static PyObject* Avx512(PyObject*, PyObject*) {
#ifdef SEQ2SEQ_CPU_KERNELS
  __builtin_cpu_init();
  return PyBool_FromLong(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq"));
#else
  Py_RETURN_FALSE;
#endif
}

static PyObject* Handlers(PyObject*, PyObject*) {
  PyObject* out = PyDict_New();
#ifdef SEQ2SEQ_CPU_KERNELS
  const std::pair<const char*, void*> all[] = {
      {"gru_layer_forward", reinterpret_cast<void*>(GruLayerForward)},
      {"gru_layer_backward", reinterpret_cast<void*>(GruLayerBackward)},
      {"bahdanau_decoder_forward", reinterpret_cast<void*>(BahdanauDecoderForward)},
      {"bahdanau_decoder_backward", reinterpret_cast<void*>(BahdanauDecoderBackward)}};
  for (const auto& [name, fn] : all) {
    PyObject* capsule = PyCapsule_New(fn, nullptr, nullptr);
    PyDict_SetItemString(out, name, capsule);
    Py_DECREF(capsule);
  }
#endif
  return out;
}

static PyMethodDef kMethods[] = {
    {"avx512", Avx512, METH_NOARGS, "Whether this CPU has AVX-512F and AVX-512DQ."},
    {"handlers", Handlers, METH_NOARGS, "{target name: FFI handler capsule}."},
    {nullptr, nullptr, 0, nullptr}};

static PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_cpu_kernels",
                              "The CPU kernels of seq2seq_jax.models (see cpu/*.cc).", -1,
                              kMethods};

PyMODINIT_FUNC PyInit__cpu_kernels() { return PyModule_Create(&kModule); }
