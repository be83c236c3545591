// A GRU layer's recurrence on the CPU, forward and backward, each as one XLA
// FFI call: the compiled kernel behind `seq2seq_jax.models.gru_cpu`, built by
// pip as the extension module `seq2seq_jax.models._gru_cpu`.
//
// Same equations, gate order and masking as recurrent_vjp.py (its docstring
// has them); float32; hidden a multiple of 16; x86-64 with AVX-512F/DQ. The
// Python side asks `avx512()` before it uses the kernel, and only the code
// between the target pragmas below is compiled for AVX-512, so the module
// imports on any x86-64 CPU.
//
// Why it is faster than XLA's scan: one call runs every step (XLA's loop
// costs several microseconds per operation per step), each step's matmul runs
// near the CPU's peak (weights packed once per call into 48-column panels
// that stay in L1/L2, a 6 x 48 register block), and the two cores each carry
// half of the batch's rows through all the steps, with no synchronisation
// between steps (rows never interact in a recurrence).
//
// Leading dimensions (from `jax.vmap` with vmap_method="broadcast_all", as
// for the two directions of a bidirectional layer) are independent problems,
// run one after the other.
#include <Python.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <vector>

#include <sched.h>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using F32 = ffi::Buffer<ffi::F32>;
using Pred = ffi::Buffer<ffi::PRED>;
using Out = ffi::ResultBuffer<ffi::F32>;

#if defined(__x86_64__) && defined(__GNUC__)
#define GRU_CPU_X86 1
#include <immintrin.h>
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,fma")

namespace {

// w [K, N] into panels of up to 48 columns, each [K][width] contiguous (N a
// multiple of 16; the last panel may be 16 or 32 wide).
void pack_panels(const float* w, float* wp, int64_t K, int64_t N) {
  for (int64_t c0 = 0; c0 < N; c0 += 48) {
    const int64_t wd = std::min<int64_t>(48, N - c0);
    for (int64_t k = 0; k < K; ++k) std::memcpy(wp + c0 * K + k * wd, w + k * N + c0, wd * 4);
  }
}

// out[R rows, 16 V columns] = bias + h[R rows, :K] @ panel: R x V registers.
template <int R, int V>
inline void block(const float* h, const float* panel, const float* bias, float* out, int64_t K,
                  int64_t N) {
  __m512 c[R][V];
  for (int j = 0; j < V; ++j) {
    const __m512 b = bias ? _mm512_loadu_ps(bias + 16 * j) : _mm512_setzero_ps();
    for (int i = 0; i < R; ++i) c[i][j] = b;
  }
  for (int64_t k = 0; k < K; ++k) {
    __m512 w[V];
    for (int j = 0; j < V; ++j) w[j] = _mm512_loadu_ps(panel + k * 16 * V + 16 * j);
    for (int i = 0; i < R; ++i) {
      const __m512 a = _mm512_set1_ps(h[i * K + k]);
      for (int j = 0; j < V; ++j) c[i][j] = _mm512_fmadd_ps(a, w[j], c[i][j]);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < V; ++j) _mm512_storeu_ps(out + i * N + 16 * j, c[i][j]);
}

template <int V>
inline void rows_block(int64_t rows, const float* h, const float* panel, const float* bias,
                       float* out, int64_t K, int64_t N) {
  switch (rows) {
    case 6: return block<6, V>(h, panel, bias, out, K, N);
    case 5: return block<5, V>(h, panel, bias, out, K, N);
    case 4: return block<4, V>(h, panel, bias, out, K, N);
    case 3: return block<3, V>(h, panel, bias, out, K, N);
    case 2: return block<2, V>(h, panel, bias, out, K, N);
    default: return block<1, V>(h, panel, bias, out, K, N);
  }
}

// out[b0:b1, :N] = bias + h[b0:b1, :K] @ w, with w packed by pack_panels
// (bias may be null).
void gemm_packed(const float* h, const float* wp, const float* bias, float* out, int64_t b0,
                 int64_t b1, int64_t K, int64_t N) {
  for (int64_t c0 = 0; c0 < N; c0 += 48) {
    const int64_t wd = std::min<int64_t>(48, N - c0);
    const float* panel = wp + c0 * K;
    const float* bp = bias ? bias + c0 : nullptr;
    for (int64_t b = b0; b < b1; b += 6) {
      const int64_t rows = std::min<int64_t>(6, b1 - b);
      float* o = out + b * N + c0;
      if (wd == 48) rows_block<3>(rows, h + b * K, panel, bp, o, K, N);
      else if (wd == 32) rows_block<2>(rows, h + b * K, panel, bp, o, K, N);
      else rows_block<1>(rows, h + b * K, panel, bp, o, K, N);
    }
  }
}

// exp on 16 floats: 2^(x log2 e) as 2^n (scalef) times a degree-6 polynomial
// of the remainder (relative error about 2e-7); sigmoid from it, and tanh as
// 2 sigmoid(2x) - 1.
inline __m512 exp16(__m512 x) {
  x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.f)), _mm512_set1_ps(-88.f));
  const __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f));
  const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_mul_ps(_mm512_sub_ps(t, n), _mm512_set1_ps(0.6931471805599453f));
  __m512 p = _mm512_set1_ps(1.f / 720);
  for (float c : {1.f / 120, 1.f / 24, 1.f / 6, 0.5f, 1.f, 1.f}) p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c));
  return _mm512_scalef_ps(p, n);
}
inline __m512 sigmoid16(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.f);
  return _mm512_div_ps(one, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}
inline __m512 tanh16(__m512 x) {
  const __m512 s = sigmoid16(_mm512_add_ps(x, x));
  return _mm512_sub_ps(_mm512_add_ps(s, s), _mm512_set1_ps(1.f));
}
inline __m512 load(const float* p) { return _mm512_loadu_ps(p); }

// One step's gates and new carry for rows b0:b1. hp: h @ w_h + b_h [B, 3H].
void gates_rows(const float* xr, const float* xz, const float* xn, const float* hp,
                const bool* valid, const float* hprev, float* hnew, int64_t b0, int64_t b1,
                int64_t H) {
  for (int64_t b = b0; b < b1; ++b) {
    const float* p = hp + b * 3 * H;
    const int64_t o = b * H;
    if (!valid[b]) {
      std::memcpy(hnew + o, hprev + o, H * 4);
      continue;
    }
    for (int64_t i = 0; i < H; i += 16) {
      const __m512 r = sigmoid16(_mm512_add_ps(load(xr + o + i), load(p + i)));
      const __m512 z = sigmoid16(_mm512_add_ps(load(xz + o + i), load(p + H + i)));
      const __m512 n = tanh16(_mm512_fmadd_ps(r, load(p + 2 * H + i), load(xn + o + i)));
      _mm512_storeu_ps(hnew + o + i, _mm512_fmadd_ps(z, _mm512_sub_ps(load(hprev + o + i), n), n));
    }
  }
}

// One backward step for rows b0:b1: from the gradient reaching the new carry
// (carried + from the outputs), the gates' gradient [da_r, da_z, da_n r]
// (the gradient of h @ w_h + b_h), da_n, and `keep`, the part of the
// carry's gradient that does not go through w_h.
void backward_rows(const float* carried, const float* g_out, const float* prev, const float* xr,
                   const float* xz, const float* xn, const float* hp, const bool* valid,
                   float* gates, float* dan, float* keep, int64_t b0, int64_t b1, int64_t H) {
  const __m512 one = _mm512_set1_ps(1.f);
  for (int64_t b = b0; b < b1; ++b) {
    const float* p = hp + b * 3 * H;
    float* g = gates + b * 3 * H;
    const int64_t o = b * H;
    const __m512 mask = _mm512_set1_ps(valid[b] ? 1.f : 0.f);
    for (int64_t i = 0; i < H; i += 16) {
      const __m512 dh = _mm512_add_ps(load(carried + o + i), load(g_out + o + i));
      const __m512 r = sigmoid16(_mm512_add_ps(load(xr + o + i), load(p + i)));
      const __m512 z = sigmoid16(_mm512_add_ps(load(xz + o + i), load(p + H + i)));
      const __m512 hn = load(p + 2 * H + i);
      const __m512 n = tanh16(_mm512_fmadd_ps(r, hn, load(xn + o + i)));
      const __m512 dnew = _mm512_mul_ps(mask, dh);
      const __m512 omz = _mm512_sub_ps(one, z);
      const __m512 da_n = _mm512_mul_ps(_mm512_mul_ps(dnew, omz), _mm512_fnmadd_ps(n, n, one));
      const __m512 da_z = _mm512_mul_ps(_mm512_mul_ps(dnew, _mm512_sub_ps(load(prev + o + i), n)),
                                        _mm512_mul_ps(z, omz));
      const __m512 da_r = _mm512_mul_ps(_mm512_mul_ps(da_n, hn), _mm512_mul_ps(r, _mm512_sub_ps(one, r)));
      _mm512_storeu_ps(g + i, da_r);
      _mm512_storeu_ps(g + H + i, da_z);
      _mm512_storeu_ps(g + 2 * H + i, _mm512_mul_ps(da_n, r));
      _mm512_storeu_ps(dan + o + i, da_n);
      _mm512_storeu_ps(keep + o + i, _mm512_fnmadd_ps(dnew, omz, dh));  // dh z, or dh on padding
    }
  }
}

// Waits, spinning briefly and then yielding, until `left` reaches zero.
void wait_for(const std::atomic<int>& left) {
  for (int spins = 0; left.load(std::memory_order_acquire) > 0; ++spins)
    if (spins > 2000) sched_yield();
}

// Runs run(0, B/2) here and run(B/2, B) on a thread of XLA's intra-op pool,
// then waits for both; with a pool of fewer than two threads, run(0, B).
template <typename Run>
void on_two_threads(ffi::ThreadPool& pool, int64_t B, const Run& run) {
  const int64_t half = B / 2;
  if (pool.num_threads() < 2 || half == 0) return run(0, B);
  std::atomic<int> left{1};
  pool.Schedule([&] {
    run(half, B);
    left.fetch_sub(1, std::memory_order_release);
  });
  run(0, half);
  wait_for(left);
}

// The number of independent problems stacked in front of a buffer's last
// `rank` dimensions.
int64_t leading(ffi::Span<const int64_t> dims, size_t rank) {
  int64_t n = 1;
  for (size_t i = 0; i + rank < dims.size(); ++i) n *= dims[i];
  return n;
}

ffi::Error Forward(ffi::ThreadPool pool, F32 w_h, F32 b_h, F32 x_r, F32 x_z, F32 x_n, Pred valid,
                   F32 h0, Out seq, Out hps) {
  const auto d = x_r.dimensions();
  const int64_t T = d[d.size() - 3], B = d[d.size() - 2], H = d[d.size() - 1], N = 3 * H;
  if (H % 16) return ffi::Error::InvalidArgument("gru_cpu: hidden must be a multiple of 16");
  const int64_t problems = leading(d, 3);
  std::vector<float> packed(H * N);
  for (int64_t q = 0; q < problems; ++q) {
    pack_panels(w_h.typed_data() + q * H * N, packed.data(), H, N);
    const float* bias = b_h.typed_data() + q * N;
    const float* h0q = h0.typed_data() + q * B * H;
    const bool* vq = valid.typed_data() + q * T * B;
    const int64_t xo = q * T * B * H;
    float* out = seq->typed_data() + xo;
    float* hp_all = hps->typed_data() + q * T * B * N;
    on_two_threads(pool, B, [&](int64_t b0, int64_t b1) {
      for (int64_t t = 0; t < T; ++t) {
        const float* h = t == 0 ? h0q : out + (t - 1) * B * H;
        float* hp = hp_all + t * B * N;
        const int64_t o = xo + t * B * H;
        gemm_packed(h, packed.data(), bias, hp, b0, b1, H, N);
        gates_rows(x_r.typed_data() + o, x_z.typed_data() + o, x_n.typed_data() + o, hp,
                   vq + t * B, h, out + t * B * H, b0, b1, H);
      }
    });
  }
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::ThreadPool pool, F32 w_h, F32 grad_seq, F32 seq, F32 h0, F32 x_r,
                    F32 x_z, F32 x_n, F32 hps, Pred valid, Out gates, Out dan, Out grad0) {
  const auto d = x_r.dimensions();
  const int64_t T = d[d.size() - 3], B = d[d.size() - 2], H = d[d.size() - 1], G = 3 * H;
  if (H % 16) return ffi::Error::InvalidArgument("gru_cpu: hidden must be a multiple of 16");
  const int64_t problems = leading(d, 3);
  std::vector<float> wt(G * H), packed(G * H), grad(B * H), next(B * H), keep(B * H);
  for (int64_t q = 0; q < problems; ++q) {
    const float* w = w_h.typed_data() + q * H * G;
    for (int64_t i = 0; i < H; ++i)
      for (int64_t j = 0; j < G; ++j) wt[j * H + i] = w[i * G + j];
    pack_panels(wt.data(), packed.data(), G, H);
    std::fill(grad.begin(), grad.end(), 0.f);
    const int64_t xo = q * T * B * H;
    const float* seq_q = seq.typed_data() + xo;
    // As in the forward pass, each thread carries its rows back through every
    // step; `cur` and `nxt` swap roles each step.
    on_two_threads(pool, B, [&](int64_t b0, int64_t b1) {
      float* cur = grad.data();
      float* nxt = next.data();
      for (int64_t t = T - 1; t >= 0; --t) {
        const float* prev = t == 0 ? h0.typed_data() + q * B * H : seq_q + (t - 1) * B * H;
        const int64_t o = xo + t * B * H;
        float* gt = gates->typed_data() + (q * T + t) * B * G;
        backward_rows(cur, grad_seq.typed_data() + o, prev, x_r.typed_data() + o,
                      x_z.typed_data() + o, x_n.typed_data() + o, hps.typed_data() + (q * T + t) * B * G,
                      valid.typed_data() + (q * T + t) * B, gt, dan->typed_data() + o, keep.data(),
                      b0, b1, H);
        gemm_packed(gt, packed.data(), nullptr, nxt, b0, b1, G, H);
        for (int64_t i = b0 * H; i < b1 * H; ++i) nxt[i] += keep[i];
        std::swap(cur, nxt);
      }
    });
    const float* last = T % 2 == 1 ? next.data() : grad.data();  // after T swaps
    std::memcpy(grad0->typed_data() + q * B * H, last, B * H * 4);
  }
  return ffi::Error::Success();
}

}  // namespace

#pragma GCC pop_options
#endif  // x86-64

#ifdef GRU_CPU_X86
XLA_FFI_DEFINE_HANDLER_SYMBOL(GruCpuForward, Forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>()    // w_h [..., H, 3H]
                                  .Arg<F32>()    // b_h [..., 3H]
                                  .Arg<F32>()    // x_r [..., T, B, H]
                                  .Arg<F32>()    // x_z
                                  .Arg<F32>()    // x_n
                                  .Arg<Pred>()   // valid [..., T, B]
                                  .Arg<F32>()    // h0 [..., B, H]
                                  .Ret<F32>()    // the carry after each step [..., T, B, H]
                                  .Ret<F32>());  // h @ w_h + b_h at each step [..., T, B, 3H]

XLA_FFI_DEFINE_HANDLER_SYMBOL(GruCpuBackward, Backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>()    // w_h
                                  .Arg<F32>()    // the gradient of the carries [..., T, B, H]
                                  .Arg<F32>()    // the carries
                                  .Arg<F32>()    // h0
                                  .Arg<F32>()    // x_r
                                  .Arg<F32>()    // x_z
                                  .Arg<F32>()    // x_n
                                  .Arg<F32>()    // the forward's h @ w_h + b_h
                                  .Arg<Pred>()   // valid
                                  .Ret<F32>()    // each step's gates' gradient [..., T, B, 3H]
                                  .Ret<F32>()    // each step's da_n [..., T, B, H]
                                  .Ret<F32>());  // the gradient of h0 [..., B, H]
#endif

// The Python module: avx512() says whether this CPU can run the kernel;
// handlers() gives the two FFI handlers as capsules for
// jax.ffi.register_ffi_target (empty off x86-64).
static PyObject* Avx512(PyObject*, PyObject*) {
#ifdef GRU_CPU_X86
  __builtin_cpu_init();
  return PyBool_FromLong(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq"));
#else
  Py_RETURN_FALSE;
#endif
}

static PyObject* Handlers(PyObject*, PyObject*) {
  PyObject* out = PyDict_New();
#ifdef GRU_CPU_X86
  const std::pair<const char*, void*> all[] = {
      {"gru_cpu_forward", reinterpret_cast<void*>(GruCpuForward)},
      {"gru_cpu_backward", reinterpret_cast<void*>(GruCpuBackward)}};
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

static PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_gru_cpu",
                              "The GRU recurrence kernel (see gru_cpu.cc).", -1, kMethods};

PyMODINIT_FUNC PyInit__gru_cpu() { return PyModule_Create(&kModule); }
