// What the CPU kernels share (gru_layer.cc, bahdanau_decoder.cc): matmuls on
// packed weights, exp/sigmoid/tanh on 16 floats, the update of a weight
// gradient, and running a batch's rows on two threads. AVX-512F/DQ: the
// Python side checks the CPU before it calls a kernel (module.cc: avx512()),
// and only the code between the target pragmas is compiled for AVX-512.
#ifndef SEQ2SEQ_JAX_MODELS_CPU_KERNELS_H_
#define SEQ2SEQ_JAX_MODELS_CPU_KERNELS_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include <sched.h>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using F32 = ffi::Buffer<ffi::F32>;
using Pred = ffi::Buffer<ffi::PRED>;
using S32 = ffi::Buffer<ffi::S32>;
using Out = ffi::ResultBuffer<ffi::F32>;

#if defined(__x86_64__) && defined(__GNUC__)
#define SEQ2SEQ_CPU_KERNELS 1
#include <immintrin.h>
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,fma")

namespace cpu_kernels {

// w [K, N] into panels of up to 48 columns, each [K][width] contiguous (N a
// multiple of 16; the last panel may be 16 or 32 wide): wp has K * N floats.
inline void pack_panels(const float* w, float* wp, int64_t K, int64_t N) {
  for (int64_t c0 = 0; c0 < N; c0 += 48) {
    const int64_t wd = std::min<int64_t>(48, N - c0);
    for (int64_t k = 0; k < K; ++k) std::memcpy(wp + c0 * K + k * wd, w + k * N + c0, wd * 4);
  }
}

// pack_panels of w's transpose (w [K, N] -> panels of w^T [N, K]).
inline void pack_transposed(const float* w, float* wp, int64_t K, int64_t N) {
  std::vector<float> t(K * N);
  for (int64_t i = 0; i < K; ++i)
    for (int64_t j = 0; j < N; ++j) t[j * K + i] = w[i * N + j];
  pack_panels(t.data(), wp, N, K);
}

inline __m512 load(const float* p) { return _mm512_loadu_ps(p); }

// out[R rows, 16 V columns] (+)= bias + h[R rows, :K] @ panel: R x V registers.
template <int R, int V, bool kAdd>
inline void block(const float* h, int64_t ldh, const float* panel, const float* bias, float* out,
                  int64_t K, int64_t ldo) {
  __m512 c[R][V];
  for (int j = 0; j < V; ++j) {
    const __m512 b = bias ? load(bias + 16 * j) : _mm512_setzero_ps();
    for (int i = 0; i < R; ++i) c[i][j] = kAdd ? _mm512_add_ps(b, load(out + i * ldo + 16 * j)) : b;
  }
  for (int64_t k = 0; k < K; ++k) {
    __m512 w[V];
    for (int j = 0; j < V; ++j) w[j] = load(panel + k * 16 * V + 16 * j);
    for (int i = 0; i < R; ++i) {
      const __m512 a = _mm512_set1_ps(h[i * ldh + k]);
      for (int j = 0; j < V; ++j) c[i][j] = _mm512_fmadd_ps(a, w[j], c[i][j]);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < V; ++j) _mm512_storeu_ps(out + i * ldo + 16 * j, c[i][j]);
}

template <int V, bool kAdd>
inline void rows_block(int64_t rows, const float* h, int64_t ldh, const float* panel,
                       const float* bias, float* out, int64_t K, int64_t ldo) {
  switch (rows) {
    case 6: return block<6, V, kAdd>(h, ldh, panel, bias, out, K, ldo);
    case 5: return block<5, V, kAdd>(h, ldh, panel, bias, out, K, ldo);
    case 4: return block<4, V, kAdd>(h, ldh, panel, bias, out, K, ldo);
    case 3: return block<3, V, kAdd>(h, ldh, panel, bias, out, K, ldo);
    case 2: return block<2, V, kAdd>(h, ldh, panel, bias, out, K, ldo);
    default: return block<1, V, kAdd>(h, ldh, panel, bias, out, K, ldo);
  }
}

// out[b0:b1, :N] = bias + h[b0:b1, :K] @ w (kAdd: out += ...), with w packed
// by pack_panels, bias possibly null; h has rows of ldh floats (default K),
// out of ldo (default N).
template <bool kAdd = false>
inline void gemm_packed(const float* h, const float* wp, const float* bias, float* out,
                        int64_t b0, int64_t b1, int64_t K, int64_t N, int64_t ldh = -1,
                        int64_t ldo = -1) {
  if (ldh < 0) ldh = K;
  if (ldo < 0) ldo = N;
  for (int64_t c0 = 0; c0 < N; c0 += 48) {
    const int64_t wd = std::min<int64_t>(48, N - c0);
    const float* panel = wp + c0 * K;
    const float* bp = bias ? bias + c0 : nullptr;
    for (int64_t b = b0; b < b1; b += 6) {
      const int64_t rows = std::min<int64_t>(6, b1 - b);
      float* o = out + b * ldo + c0;
      const float* hb = h + b * ldh;
      if (wd == 48) rows_block<3, kAdd>(rows, hb, ldh, panel, bp, o, K, ldo);
      else if (wd == 32) rows_block<2, kAdd>(rows, hb, ldh, panel, bp, o, K, ldo);
      else rows_block<1, kAdd>(rows, hb, ldh, panel, bp, o, K, ldo);
    }
  }
}

// dw[:K, :N] += p[rows, :K]^T g[rows, :N] and, if db, db[:N] += the sum of
// g's rows: a weight gradient's share of some rows (K a multiple of 8, N of
// 16; p's rows ldp floats apart, default K), in 8 x 16V register blocks of
// dw, each loaded and stored once.
template <int V>
inline void outer_block(const float* p, int64_t ldp, const float* g, int64_t rows, float* dw,
                        int64_t i0, int64_t j0, int64_t N) {
  __m512 c[8][V];
  for (int i = 0; i < 8; ++i)
    for (int j = 0; j < V; ++j) c[i][j] = load(dw + (i0 + i) * N + j0 + 16 * j);
  for (int64_t b = 0; b < rows; ++b) {
    __m512 gv[V];
    for (int j = 0; j < V; ++j) gv[j] = load(g + b * N + j0 + 16 * j);
    for (int i = 0; i < 8; ++i) {
      const __m512 a = _mm512_set1_ps(p[b * ldp + i0 + i]);
      for (int j = 0; j < V; ++j) c[i][j] = _mm512_fmadd_ps(a, gv[j], c[i][j]);
    }
  }
  for (int i = 0; i < 8; ++i)
    for (int j = 0; j < V; ++j) _mm512_storeu_ps(dw + (i0 + i) * N + j0 + 16 * j, c[i][j]);
}

inline void add_outer(const float* p, const float* g, int64_t rows, float* dw, float* db,
                      int64_t K, int64_t N, int64_t ldp = -1) {
  if (ldp < 0) ldp = K;
  for (int64_t i0 = 0; i0 < K; i0 += 8)
    for (int64_t j0 = 0; j0 < N; j0 += 48) {
      const int64_t wd = std::min<int64_t>(48, N - j0);
      if (wd == 48) outer_block<3>(p, ldp, g, rows, dw, i0, j0, N);
      else if (wd == 32) outer_block<2>(p, ldp, g, rows, dw, i0, j0, N);
      else outer_block<1>(p, ldp, g, rows, dw, i0, j0, N);
    }
  if (db)
    for (int64_t b = 0; b < rows; ++b)
      for (int64_t j = 0; j < N; j += 16)
        _mm512_storeu_ps(db + j, _mm512_add_ps(load(db + j), load(g + b * N + j)));
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

// The input pre-activations of a GRU step: row b's x_r, x_z and x_n start
// at r + b * ld, z + b * ld and n + b * ld.
struct GateInputs {
  const float *r, *z, *n;
  int64_t ld;
};

// One GRU step's gates and new carry for rows b0:b1; hp = h @ w_h + b_h
// [B, 3H]; valid (null: all rows) False keeps a row's carry.
inline void gru_gates(const GateInputs& x, const float* hp, const bool* valid,
                      const float* hprev, float* hnew, int64_t b0, int64_t b1, int64_t H) {
  for (int64_t b = b0; b < b1; ++b) {
    const float* p = hp + b * 3 * H;
    const float *xr = x.r + b * x.ld, *xz = x.z + b * x.ld, *xn = x.n + b * x.ld;
    const int64_t o = b * H;
    if (valid && !valid[b]) {
      std::memcpy(hnew + o, hprev + o, H * 4);
      continue;
    }
    for (int64_t i = 0; i < H; i += 16) {
      const __m512 r = sigmoid16(_mm512_add_ps(load(xr + i), load(p + i)));
      const __m512 z = sigmoid16(_mm512_add_ps(load(xz + i), load(p + H + i)));
      const __m512 n = tanh16(_mm512_fmadd_ps(r, load(p + 2 * H + i), load(xn + i)));
      _mm512_storeu_ps(hnew + o + i, _mm512_fmadd_ps(z, _mm512_sub_ps(load(hprev + o + i), n), n));
    }
  }
}

// One GRU step backward for rows b0:b1 (x, hp, valid as in gru_gates; dh:
// the gradient reaching the new carry). Writes the gradient
// of h @ w_h + b_h, [da_r, da_z, da_n r], to dhp [B, 3H]; da_n to dan (rows
// of ldan floats: dxp + 2H when dxp = [da_r, da_z, da_n] is wanted); and to
// keep the part of the previous carry's gradient that does not go through
// w_h (dh z; dh on padding).
inline void gru_gates_backward(const float* dh, const float* prev, const GateInputs& x,
                               const float* hp, const bool* valid, float* dhp,
                               float* dan, int64_t ldan, float* keep, int64_t b0, int64_t b1,
                               int64_t H) {
  const __m512 one = _mm512_set1_ps(1.f);
  for (int64_t b = b0; b < b1; ++b) {
    const float* p = hp + b * 3 * H;
    const float *xr = x.r + b * x.ld, *xz = x.z + b * x.ld, *xn = x.n + b * x.ld;
    float* g = dhp + b * 3 * H;
    const int64_t o = b * H;
    const __m512 mask = _mm512_set1_ps(!valid || valid[b] ? 1.f : 0.f);
    for (int64_t i = 0; i < H; i += 16) {
      const __m512 d = load(dh + o + i);
      const __m512 r = sigmoid16(_mm512_add_ps(load(xr + i), load(p + i)));
      const __m512 z = sigmoid16(_mm512_add_ps(load(xz + i), load(p + H + i)));
      const __m512 hn = load(p + 2 * H + i);
      const __m512 n = tanh16(_mm512_fmadd_ps(r, hn, load(xn + i)));
      const __m512 dnew = _mm512_mul_ps(mask, d);
      const __m512 omz = _mm512_sub_ps(one, z);
      const __m512 da_n = _mm512_mul_ps(_mm512_mul_ps(dnew, omz), _mm512_fnmadd_ps(n, n, one));
      const __m512 da_z = _mm512_mul_ps(_mm512_mul_ps(dnew, _mm512_sub_ps(load(prev + o + i), n)),
                                        _mm512_mul_ps(z, omz));
      const __m512 da_r = _mm512_mul_ps(_mm512_mul_ps(da_n, hn), _mm512_mul_ps(r, _mm512_sub_ps(one, r)));
      _mm512_storeu_ps(g + i, da_r);
      _mm512_storeu_ps(g + H + i, da_z);
      _mm512_storeu_ps(g + 2 * H + i, _mm512_mul_ps(da_n, r));
      _mm512_storeu_ps(dan + b * ldan + i, da_n);
      _mm512_storeu_ps(keep + o + i, _mm512_fnmadd_ps(dnew, omz, d));
    }
  }
}

// Runs run(0, B/2) here and run(B/2, B) on a thread of XLA's intra-op pool,
// then returns when both are done; with a pool of fewer than two threads,
// run(0, B). Rows never interact in these recurrences, so each thread carries
// its rows through every step with no synchronisation in between.
//
// The pool may have no free thread: with several devices in one process,
// every pool thread can be running a kernel like this one. So whichever of
// the two claims the second half first runs it: if the pool's task has not
// started when this thread is done with its own half, this thread runs the
// second half too, and the task, when it starts, finds nothing to do. This
// thread waits only for a task that is running.
template <typename Run>
void on_two_threads(ffi::ThreadPool& pool, int64_t B, const Run& run) {
  const int64_t half = B / 2;
  if (pool.num_threads() < 2 || half == 0) return run(0, B);
  struct Shared {
    std::atomic<int> claimed{0}, done{0};
  };
  auto shared = std::make_shared<Shared>();  // outlives this call if the task starts late
  pool.Schedule([shared, &run, half, B] {
    if (shared->claimed.exchange(1, std::memory_order_acq_rel) == 0) {
      run(half, B);
      shared->done.store(1, std::memory_order_release);
    }
  });
  run(0, half);
  if (shared->claimed.exchange(1, std::memory_order_acq_rel) == 0) return run(half, B);
  for (int spins = 0; shared->done.load(std::memory_order_acquire) == 0; ++spins)
    if (spins > 2000) sched_yield();
}

// The number of independent problems stacked (by jax.vmap) in front of a
// buffer's last `rank` dimensions.
inline int64_t leading(ffi::Span<const int64_t> dims, size_t rank) {
  int64_t n = 1;
  for (size_t i = 0; i + rank < dims.size(); ++i) n *= dims[i];
  return n;
}

}  // namespace cpu_kernels

#pragma GCC pop_options
#endif  // x86-64 with GCC or Clang

#endif  // SEQ2SEQ_JAX_MODELS_CPU_KERNELS_H_
