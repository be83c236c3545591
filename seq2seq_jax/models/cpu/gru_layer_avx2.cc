// gru_layer.cc compiled for AVX2 with FMA (kernels.h): the handlers
// GruLayerForward_avx2 and GruLayerBackward_avx2.
#define SEQ2SEQ_CPU_AVX2 1
#include "gru_layer.cc"
