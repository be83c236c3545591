// The extension module `seq2seq_jax.models._cpu_kernels` (built by setup.py):
// isas() names the instruction sets this CPU can run the kernels with, best
// first; handlers() gives every compiled kernel's XLA FFI handler as a capsule
// for jax.ffi.register_ffi_target, its instruction set in its name (none off
// x86-64). Nothing here is compiled for AVX-512 or AVX2, so it imports on any
// CPU.
#include <Python.h>

#include <utility>

#include "kernels.h"

#ifdef SEQ2SEQ_CPU_KERNELS
// Defined by XLA_FFI_DEFINE_HANDLER_SYMBOL in gru_layer.cc and
// bahdanau_decoder.cc (for AVX-512) and their *_avx2.cc twins.
#define SEQ2SEQ_DECLARE_HANDLERS(isa)                               \
  XLA_FFI_Error* GruLayerForward_##isa(XLA_FFI_CallFrame*);         \
  XLA_FFI_Error* GruLayerBackward_##isa(XLA_FFI_CallFrame*);        \
  XLA_FFI_Error* BahdanauDecoderForward_##isa(XLA_FFI_CallFrame*);  \
  XLA_FFI_Error* BahdanauDecoderBackward_##isa(XLA_FFI_CallFrame*);
extern "C" {
SEQ2SEQ_DECLARE_HANDLERS(avx512)
SEQ2SEQ_DECLARE_HANDLERS(avx2)
}
// {target name, handler} of one instruction set's kernels.
#define SEQ2SEQ_HANDLERS(isa)                                                                 \
  {"gru_layer_forward_" #isa, reinterpret_cast<void*>(GruLayerForward_##isa)},                \
      {"gru_layer_backward_" #isa, reinterpret_cast<void*>(GruLayerBackward_##isa)},          \
      {"bahdanau_decoder_forward_" #isa, reinterpret_cast<void*>(BahdanauDecoderForward_##isa)}, \
      {"bahdanau_decoder_backward_" #isa, reinterpret_cast<void*>(BahdanauDecoderBackward_##isa)}
#endif

static PyObject* Isas(PyObject*, PyObject*) {
  PyObject* out = PyList_New(0);
#ifdef SEQ2SEQ_CPU_KERNELS
  __builtin_cpu_init();  // the checks include the OS saving the wide registers
  const std::pair<const char*, bool> all[] = {
      {"avx512", __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")},
      {"avx2", __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")}};
  for (const auto& [name, supported] : all) {
    if (!supported) continue;
    PyObject* s = PyUnicode_FromString(name);
    PyList_Append(out, s);
    Py_DECREF(s);
  }
#endif
  return out;
}

static PyObject* Handlers(PyObject*, PyObject*) {
  PyObject* out = PyDict_New();
#ifdef SEQ2SEQ_CPU_KERNELS
  const std::pair<const char*, void*> all[] = {SEQ2SEQ_HANDLERS(avx512), SEQ2SEQ_HANDLERS(avx2)};
  for (const auto& [name, fn] : all) {
    PyObject* capsule = PyCapsule_New(fn, nullptr, nullptr);
    PyDict_SetItemString(out, name, capsule);
    Py_DECREF(capsule);
  }
#endif
  return out;
}

static PyMethodDef kMethods[] = {
    {"isas", Isas, METH_NOARGS,
     "The instruction sets this CPU can run the kernels with, best first: of 'avx512' "
     "(AVX-512F/DQ) and 'avx2' (AVX2 and FMA)."},
    {"handlers", Handlers, METH_NOARGS,
     "{target name with its instruction set (gru_layer_forward_avx2): FFI handler capsule}."},
    {nullptr, nullptr, 0, nullptr}};

static PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_cpu_kernels",
                              "The CPU kernels of seq2seq_jax.models (see cpu/*.cc).", -1,
                              kMethods};

PyMODINIT_FUNC PyInit__cpu_kernels() { return PyModule_Create(&kModule); }
