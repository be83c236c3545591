// bahdanau_decoder.cc compiled for AVX2 with FMA (kernels.h): the handlers
// BahdanauDecoderForward_avx2 and BahdanauDecoderBackward_avx2.
#define SEQ2SEQ_CPU_AVX2 1
#include "bahdanau_decoder.cc"
