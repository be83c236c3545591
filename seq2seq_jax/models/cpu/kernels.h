// What the CPU kernels share (gru_layer.cc, bahdanau_decoder.cc): a vector
// of 16 floats with the few operations they use, exp/sigmoid/tanh on it,
// matmuls on packed weights, the update of a weight gradient, and running a
// batch's rows on two threads.
//
// Each kernel source is compiled twice, for AVX-512F/DQ and (by its *_avx2.cc
// twin, which defines SEQ2SEQ_CPU_AVX2 first) for AVX2 with FMA. The code of
// one instruction set lives in its own namespace, cpu_kernels::avx512 or
// cpu_kernels::avx2 (SEQ2SEQ_ISA), so that the linker never merges an inline
// function compiled for one with its twin compiled for the other, and only
// that code is compiled for it (between push_options + SEQ2SEQ_ISA_TARGET
// and pop_options): module.cc, which asks the CPU what it has, imports on any
// x86-64, and Python calls a handler only on a CPU that can run it.
//
// Both give the same bits: every vector operation is the same IEEE one lane
// by lane, exp's scaling by 2^n rounds once in both, the horizontal sum adds
// in the same order, and the matmuls add each sum's terms in the same order
// whatever their register blocks.
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
// GCC 12.1 and 12.2 warn of "'__Y' may be used uninitialized" in their own
// AVX-512 intrinsics (GCC bug 105593): silenced for those headers alone.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#ifdef SEQ2SEQ_CPU_AVX2
#define SEQ2SEQ_ISA avx2
#define SEQ2SEQ_ISA_TARGET _Pragma("GCC target(\"avx2,fma\")")
#else
#define SEQ2SEQ_ISA avx512
#define SEQ2SEQ_ISA_TARGET _Pragma("GCC target(\"avx512f,avx512dq,fma\")")
#endif
// A handler's symbol for this instruction set, e.g. GruLayerForward_avx2.
#define SEQ2SEQ_ISA_SYMBOL(name) SEQ2SEQ_PASTE(name, SEQ2SEQ_ISA)
#define SEQ2SEQ_PASTE(a, b) SEQ2SEQ_PASTE_(a, b)
#define SEQ2SEQ_PASTE_(a, b) a##_##b

#pragma GCC push_options
SEQ2SEQ_ISA_TARGET

namespace cpu_kernels::SEQ2SEQ_ISA {

#ifdef SEQ2SEQ_CPU_AVX2
// 16 floats in two AVX2 registers.
struct Vec {
  __m256 lo, hi;
};
inline Vec load(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
inline void store(float* p, Vec a) {
  _mm256_storeu_ps(p, a.lo);
  _mm256_storeu_ps(p + 8, a.hi);
}
inline Vec set1(float x) { return {_mm256_set1_ps(x), _mm256_set1_ps(x)}; }
inline Vec add(Vec a, Vec b) { return {_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)}; }
inline Vec sub(Vec a, Vec b) { return {_mm256_sub_ps(a.lo, b.lo), _mm256_sub_ps(a.hi, b.hi)}; }
inline Vec mul(Vec a, Vec b) { return {_mm256_mul_ps(a.lo, b.lo), _mm256_mul_ps(a.hi, b.hi)}; }
inline Vec div(Vec a, Vec b) { return {_mm256_div_ps(a.lo, b.lo), _mm256_div_ps(a.hi, b.hi)}; }
inline Vec min(Vec a, Vec b) { return {_mm256_min_ps(a.lo, b.lo), _mm256_min_ps(a.hi, b.hi)}; }
inline Vec max(Vec a, Vec b) { return {_mm256_max_ps(a.lo, b.lo), _mm256_max_ps(a.hi, b.hi)}; }
inline Vec fmadd(Vec a, Vec b, Vec c) {  // a b + c
  return {_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)};
}
inline Vec fnmadd(Vec a, Vec b, Vec c) {  // c - a b
  return {_mm256_fnmadd_ps(a.lo, b.lo, c.lo), _mm256_fnmadd_ps(a.hi, b.hi, c.hi)};
}
inline Vec round(Vec a) {  // to the nearest integer, ties to even
  constexpr int kMode = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  return {_mm256_round_ps(a.lo, kMode), _mm256_round_ps(a.hi, kMode)};
}
// p 2^n for integers n in [-127, 127], as _mm512_scalef_ps: there is no
// AVX2 instruction for it, and 2^n built in a float's exponent bits must be a
// normal float (n >= -126), so p 2^(n/2) (exact) times 2^(n - n/2): one
// rounding, also where the result is subnormal.
inline __m256 pow2(__m256i n) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(127)), 23));
}
inline __m256 scale2(__m256 p, __m256 n) {
  const __m256i k = _mm256_cvtps_epi32(n), half = _mm256_srai_epi32(k, 1);
  return _mm256_mul_ps(_mm256_mul_ps(p, pow2(half)), pow2(_mm256_sub_epi32(k, half)));
}
inline Vec scale2(Vec p, Vec n) { return {scale2(p.lo, n.lo), scale2(p.hi, n.hi)}; }
// The sum of the 16 floats, added in _mm512_reduce_add_ps's order: halves,
// quarters, then lanes (0 + 2) + (1 + 3).
inline float reduce_add(Vec a) {
  const __m256 s = _mm256_add_ps(a.hi, a.lo);
  __m128 q = _mm_add_ps(_mm256_extractf128_ps(s, 1), _mm256_castps256_ps128(s));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  return _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)));
}

// The matmuls' register blocks fit the 16 registers: gemm_packed's 6 rows x
// 16 columns take 12 for the sums, 2 for the weights and 1 for a broadcast
// row value, and so do add_outer's (4 rows x 16 columns ran it at half the
// speed).
constexpr int64_t kPanel = 16, kOuterRows = 6;
#else
// 16 floats in one AVX-512 register.
using Vec = __m512;
inline Vec load(const float* p) { return _mm512_loadu_ps(p); }
inline void store(float* p, Vec a) { _mm512_storeu_ps(p, a); }
inline Vec set1(float x) { return _mm512_set1_ps(x); }
inline Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
inline Vec sub(Vec a, Vec b) { return _mm512_sub_ps(a, b); }
inline Vec mul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
inline Vec div(Vec a, Vec b) { return _mm512_div_ps(a, b); }
inline Vec min(Vec a, Vec b) { return _mm512_min_ps(a, b); }
inline Vec max(Vec a, Vec b) { return _mm512_max_ps(a, b); }
inline Vec fmadd(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }  // a b + c
inline Vec fnmadd(Vec a, Vec b, Vec c) { return _mm512_fnmadd_ps(a, b, c); }  // c - a b
inline Vec round(Vec a) {  // to the nearest integer, ties to even
  return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
inline Vec scale2(Vec p, Vec n) { return _mm512_scalef_ps(p, n); }  // p 2^n, n integral
inline float reduce_add(Vec a) { return _mm512_reduce_add_ps(a); }

// The matmuls' register blocks use 22 of the 32 registers: gemm_packed's 6
// rows x 48 columns take 18 for the sums, 3 for the weights and 1 for a
// broadcast row value; add_outer's are 8 rows x 48 columns.
constexpr int64_t kPanel = 48, kOuterRows = 8;
#endif

// w [K, N] into panels of up to kPanel columns, each [K][width] contiguous (N
// a multiple of 16; the last panel may be narrower): wp has K * N floats.
inline void pack_panels(const float* w, float* wp, int64_t K, int64_t N) {
  for (int64_t c0 = 0; c0 < N; c0 += kPanel) {
    const int64_t wd = std::min<int64_t>(kPanel, N - c0);
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

// out[R rows, 16 V columns] (+)= bias + h[R rows, :K] @ panel: R x V vectors.
template <int R, int V, bool kAdd>
inline void block(const float* h, int64_t ldh, const float* panel, const float* bias, float* out,
                  int64_t K, int64_t ldo) {
  Vec c[R][V];
  for (int j = 0; j < V; ++j) {
    const Vec b = bias ? load(bias + 16 * j) : set1(0.f);
    for (int i = 0; i < R; ++i) c[i][j] = kAdd ? add(b, load(out + i * ldo + 16 * j)) : b;
  }
  for (int64_t k = 0; k < K; ++k) {
    Vec w[V];
    for (int j = 0; j < V; ++j) w[j] = load(panel + k * 16 * V + 16 * j);
    for (int i = 0; i < R; ++i) {
      const Vec a = set1(h[i * ldh + k]);
      for (int j = 0; j < V; ++j) c[i][j] = fmadd(a, w[j], c[i][j]);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < V; ++j) store(out + i * ldo + 16 * j, c[i][j]);
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
  for (int64_t c0 = 0; c0 < N; c0 += kPanel) {
    const int64_t wd = std::min<int64_t>(kPanel, N - c0);
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
// g's rows: a weight gradient's share of some rows (K a multiple of 16, N of
// 16; p's rows ldp floats apart, default K), in register blocks of kOuterRows
// (fewer at the end of K) x 16V of dw, each loaded and stored once.
template <int R, int V>
inline void outer_block(const float* p, int64_t ldp, const float* g, int64_t rows, float* dw,
                        int64_t i0, int64_t j0, int64_t N) {
  Vec c[R][V];
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < V; ++j) c[i][j] = load(dw + (i0 + i) * N + j0 + 16 * j);
  for (int64_t b = 0; b < rows; ++b) {
    Vec gv[V];
    for (int j = 0; j < V; ++j) gv[j] = load(g + b * N + j0 + 16 * j);
    for (int i = 0; i < R; ++i) {
      const Vec a = set1(p[b * ldp + i0 + i]);
      for (int j = 0; j < V; ++j) c[i][j] = fmadd(a, gv[j], c[i][j]);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < V; ++j) store(dw + (i0 + i) * N + j0 + 16 * j, c[i][j]);
}

template <int V>
inline void outer_rows(int64_t n, const float* p, int64_t ldp, const float* g, int64_t rows,
                       float* dw, int64_t i0, int64_t j0, int64_t N) {
  switch (n) {  // kOuterRows, or what K leaves at its end (K is a multiple of 16)
    case kOuterRows: return outer_block<kOuterRows, V>(p, ldp, g, rows, dw, i0, j0, N);
    case 4: return outer_block<4, V>(p, ldp, g, rows, dw, i0, j0, N);
    default: return outer_block<2, V>(p, ldp, g, rows, dw, i0, j0, N);
  }
}

inline void add_outer(const float* p, const float* g, int64_t rows, float* dw, float* db,
                      int64_t K, int64_t N, int64_t ldp = -1) {
  if (ldp < 0) ldp = K;
  for (int64_t i0 = 0; i0 < K; i0 += kOuterRows) {
    const int64_t n = std::min<int64_t>(kOuterRows, K - i0);
    for (int64_t j0 = 0; j0 < N; j0 += kPanel) {
      const int64_t wd = std::min<int64_t>(kPanel, N - j0);
      if (wd == 48) outer_rows<3>(n, p, ldp, g, rows, dw, i0, j0, N);
      else if (wd == 32) outer_rows<2>(n, p, ldp, g, rows, dw, i0, j0, N);
      else outer_rows<1>(n, p, ldp, g, rows, dw, i0, j0, N);
    }
  }
  if (db)
    for (int64_t b = 0; b < rows; ++b)
      for (int64_t j = 0; j < N; j += 16) store(db + j, add(load(db + j), load(g + b * N + j)));
}

// exp on 16 floats: 2^(x log2 e) as 2^n times a degree-6 polynomial of the
// remainder (relative error about 2e-7), and sigmoid from it.
inline Vec exp16(Vec x) {
  x = max(min(x, set1(88.f)), set1(-88.f));
  const Vec t = mul(x, set1(1.44269504088896341f));
  const Vec n = round(t);
  const Vec f = mul(sub(t, n), set1(0.6931471805599453f));
  Vec p = set1(1.f / 720);
  for (float c : {1.f / 120, 1.f / 24, 1.f / 6, 0.5f, 1.f, 1.f}) p = fmadd(p, f, set1(c));
  return scale2(p, n);
}
inline Vec sigmoid16(Vec x) {
  const Vec one = set1(1.f);
  return div(one, add(one, exp16(sub(set1(0.f), x))));
}
// tanh on 16 floats as x P(x^2) / Q(x^2) (P of degree 6, Q of degree 3) for
// |x| up to 7.9053, beyond which tanh is +-1 in float32, with the
// coefficients of Eigen's fast float tanh. Within 6 ulp of tanh (checked
// against float64 over [-12, 12]) and accurate near 0, where
// 2 sigmoid(2x) - 1 loses most of its digits; and it needs no exp, whose 2^n
// AVX2 has no instruction for: with it the decoder's forward pass (hidden 64,
// attention 128) took a fifth less time on AVX2, a tenth less on AVX-512.
inline Vec tanh16(Vec x) {
  x = max(min(x, set1(7.90531110763549805f)), set1(-7.90531110763549805f));
  const Vec x2 = mul(x, x);
  Vec p = set1(-2.76076847742355e-16f);
  for (float c : {2.00018790482477e-13f, -8.60467152213735e-11f, 5.12229709037114e-08f,
                  1.48572235717979e-05f, 6.37261928875436e-04f, 4.89352455891786e-03f})
    p = fmadd(p, x2, set1(c));
  Vec q = set1(1.19825839466702e-06f);
  for (float c : {1.18534705686654e-04f, 2.26843463243900e-03f, 4.89352518554385e-03f})
    q = fmadd(q, x2, set1(c));
  return div(mul(x, p), q);
}

// The input pre-activations of a GRU step: row b's x_r, x_z and x_n start
// at r + b * ld, z + b * ld and n + b * ld.
struct GateInputs {
  const float *r, *z, *n;
  int64_t ld;
};

// One GRU step's gates and new carry for rows b0:b1; hp = h @ w_h + b_h
// [B, 3H].
inline void gru_gates(const GateInputs& x, const float* hp, const float* hprev, float* hnew,
                      int64_t b0, int64_t b1, int64_t H) {
  for (int64_t b = b0; b < b1; ++b) {
    const float* p = hp + b * 3 * H;
    const float *xr = x.r + b * x.ld, *xz = x.z + b * x.ld, *xn = x.n + b * x.ld;
    const int64_t o = b * H;
    for (int64_t i = 0; i < H; i += 16) {
      const Vec r = sigmoid16(add(load(xr + i), load(p + i)));
      const Vec z = sigmoid16(add(load(xz + i), load(p + H + i)));
      const Vec n = tanh16(fmadd(r, load(p + 2 * H + i), load(xn + i)));
      store(hnew + o + i, fmadd(z, sub(load(hprev + o + i), n), n));
    }
  }
}

// One GRU step backward for rows b0:b1 (x, hp as in gru_gates; dh: the
// gradient reaching the new carry). Writes the gradient of h @ w_h + b_h,
// [da_r, da_z, da_n r], to dhp [B, 3H]; da_n to dan (rows of ldan floats:
// dxp + 2H when dxp = [da_r, da_z, da_n] is wanted); and to keep the part of
// the previous carry's gradient that does not go through w_h (dh z).
inline void gru_gates_backward(const float* dh, const float* prev, const GateInputs& x,
                               const float* hp, float* dhp, float* dan, int64_t ldan,
                               float* keep, int64_t b0, int64_t b1, int64_t H) {
  const Vec one = set1(1.f);
  for (int64_t b = b0; b < b1; ++b) {
    const float* p = hp + b * 3 * H;
    const float *xr = x.r + b * x.ld, *xz = x.z + b * x.ld, *xn = x.n + b * x.ld;
    float* g = dhp + b * 3 * H;
    const int64_t o = b * H;
    for (int64_t i = 0; i < H; i += 16) {
      const Vec d = load(dh + o + i);
      const Vec r = sigmoid16(add(load(xr + i), load(p + i)));
      const Vec z = sigmoid16(add(load(xz + i), load(p + H + i)));
      const Vec hn = load(p + 2 * H + i);
      const Vec n = tanh16(fmadd(r, hn, load(xn + i)));
      const Vec omz = sub(one, z);
      const Vec da_n = mul(mul(d, omz), fnmadd(n, n, one));
      const Vec da_z = mul(mul(d, sub(load(prev + o + i), n)), mul(z, omz));
      const Vec da_r = mul(mul(da_n, hn), mul(r, sub(one, r)));
      store(g + i, da_r);
      store(g + H + i, da_z);
      store(g + 2 * H + i, mul(da_n, r));
      store(dan + b * ldan + i, da_n);
      store(keep + o + i, fnmadd(d, omz, d));
    }
  }
}

// The CPU the calling thread runs on (-1 if unknown).
inline int current_cpu() {
#ifdef __linux__
  return sched_getcpu();
#else
  return -1;
#endif
}

// While it lives, keeps the calling thread off CPU `cpu` if it is on it and
// may run elsewhere; then gives the thread back its affinity. Linux wakes a
// pool thread on the CPU of the thread that woke it when it deems that
// cheaper, and then the two halves of on_two_threads share one CPU, the
// other idle, until the next load balancing: on the 2-vCPU benchmark
// machine that happened in about half of the hidden-64 train steps
// (recorded with sched_getcpu), each then taking about 1.6x as long
// (median step 4.2-5.0 ms, and 3.3-3.7 ms with this).
class AwayFrom {
 public:
  explicit AwayFrom(int cpu) {
#ifdef __linux__
    if (cpu < 0 || sched_getcpu() != cpu || sched_getaffinity(0, sizeof(old_), &old_) != 0)
      return;
    cpu_set_t others = old_;
    CPU_CLR(cpu, &others);
    moved_ = CPU_COUNT(&others) > 0 && sched_setaffinity(0, sizeof(others), &others) == 0;
#endif
  }
  ~AwayFrom() {
#ifdef __linux__
    if (moved_) sched_setaffinity(0, sizeof(old_), &old_);
#endif
  }
  AwayFrom(const AwayFrom&) = delete;
  AwayFrom& operator=(const AwayFrom&) = delete;

 private:
#ifdef __linux__
  cpu_set_t old_;
#endif
  bool moved_ = false;
};

// Where on_two_threads splits B rows: B / 2, or B when it runs them all on
// the calling thread.
inline int64_t two_thread_split(ffi::ThreadPool& pool, int64_t B) {
  return pool.num_threads() < 2 || B / 2 == 0 ? B : B / 2;
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
  const int64_t half = two_thread_split(pool, B);
  if (half == B) return run(0, B);
  struct Shared {
    std::atomic<int> claimed{0}, done{0};
  };
  auto shared = std::make_shared<Shared>();  // outlives this call if the task starts late
  const int caller_cpu = current_cpu();
  pool.Schedule([shared, &run, half, B, caller_cpu] {
    if (shared->claimed.exchange(1, std::memory_order_acq_rel) == 0) {
      const AwayFrom away(caller_cpu);
      run(half, B);
      shared->done.store(1, std::memory_order_release);
    }
  });
  run(0, half);
  if (shared->claimed.exchange(1, std::memory_order_acq_rel) == 0) return run(half, B);
  for (int spins = 0; shared->done.load(std::memory_order_acquire) == 0; ++spins)
    if (spins > 2000) sched_yield();
}

// The order in which a kernel keeps the batch's rows ("slots"): each
// thread's share of the slots ([0, split) and [split, B), see
// two_thread_split) holds its rows from the longest to the shortest, so the
// rows still running at step t are the first slots of each share and the
// matmuls skip the rest: a row's padding costs no step. The rows are dealt
// to the two shares in turn by length, which balances their work.
struct Order {
  std::vector<int64_t> row;  // slot -> row
  std::vector<int64_t> len;  // slot -> the row's length, clamped to [0, T]

  Order(const int32_t* lengths, int64_t B, int64_t T, int64_t split) : row(B), len(B) {
    std::vector<int64_t> by_length(B);
    for (int64_t b = 0; b < B; ++b) by_length[b] = b;
    auto clamped = [&](int64_t b) { return std::clamp<int64_t>(lengths[b], 0, T); };
    std::stable_sort(by_length.begin(), by_length.end(),
                     [&](int64_t a, int64_t b) { return clamped(a) > clamped(b); });
    int64_t next[2] = {0, split};
    const int64_t end[2] = {split, B};
    for (int64_t r = 0; r < B; ++r) {
      int share = r % 2;
      if (next[share] == end[share]) share = 1 - share;
      row[next[share]] = by_length[r];
      len[next[share]++] = clamped(by_length[r]);
    }
  }
  // The end of the slots of s0:s1 (one share) that still run at step t.
  int64_t running_end(int64_t s0, int64_t s1, int64_t t) const {
    while (s0 < s1 && len[s0] > t) ++s0;
    return s0;
  }
  // rows [B, n] -> slots [B, n]
  void to_slots(const float* rows, float* slots, int64_t n) const {
    for (size_t s = 0; s < row.size(); ++s) std::memcpy(slots + s * n, rows + row[s] * n, n * 4);
  }
  void to_rows(const float* slots, float* rows, int64_t n) const {
    for (size_t s = 0; s < row.size(); ++s) std::memcpy(rows + row[s] * n, slots + s * n, n * 4);
  }
};

// The number of independent problems stacked (by jax.vmap) in front of a
// buffer's last `rank` dimensions.
inline int64_t leading(ffi::Span<const int64_t> dims, size_t rank) {
  int64_t n = 1;
  for (size_t i = 0; i + rank < dims.size(); ++i) n *= dims[i];
  return n;
}

}  // namespace cpu_kernels::SEQ2SEQ_ISA

#pragma GCC pop_options
#endif  // x86-64 with GCC or Clang

#endif  // SEQ2SEQ_JAX_MODELS_CPU_KERNELS_H_
