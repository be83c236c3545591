// A GRU layer's recurrence, forward and backward, each as one XLA FFI call on
// the CPU: the probe of tools/ffi_gru/probe.py (issue 17's fused-kernel
// lever), not used by the package. Same equations, gate order and masking as
// seq2seq_jax/models/recurrent_vjp.py; float32; AVX-512; 3 * hidden a multiple
// of 64. The recurrent weights are packed once per call into 64-column panels
// that each step's matmul (a 4 x 64 register block) streams; the gates use a
// polynomial exp (sigmoid, and tanh as 2 sigmoid(2x) - 1). Batch rows never
// interact in the recurrence, so two threads (the caller and one of XLA's
// intra-op pool) each run half the rows through every step.
#include <atomic>
#include <sched.h>
#include <cstring>
#include <cstdint>
#include <vector>
#include <immintrin.h>
#include <algorithm>
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using F32 = ffi::Buffer<ffi::F32>;
using Pred = ffi::Buffer<ffi::PRED>;
using Out = ffi::Buffer<ffi::F32>;  // a result

// The recurrent weights are packed once per call into 64-column panels
// ([N/64][K][64], each panel contiguous), which each step's matmul streams.
static void pack_panels(const float* w, float* wp, int64_t K, int64_t N) {
  for (int64_t p = 0; p < N / 64; ++p)
    for (int64_t k = 0; k < K; ++k)
      std::memcpy(wp + (p * K + k) * 64, w + k * N + p * 64, 64 * sizeof(float));
}

// out[rows b0..b1, :N] = bias + h[b0..b1, :K] @ w, w packed by pack_panels.
template <int R>
static inline void block(const float* h, const float* panel, const float* bias, float* out,
                         int64_t K, int64_t N) {
  __m512 c[R][4];
  for (int j = 0; j < 4; ++j) {
    __m512 bv = bias ? _mm512_loadu_ps(bias + 16 * j) : _mm512_setzero_ps();
    for (int i = 0; i < R; ++i) c[i][j] = bv;
  }
  for (int64_t k = 0; k < K; ++k) {
    const float* wk = panel + k * 64;
    __m512 w0 = _mm512_loadu_ps(wk), w1 = _mm512_loadu_ps(wk + 16), w2 = _mm512_loadu_ps(wk + 32),
           w3 = _mm512_loadu_ps(wk + 48);
    for (int i = 0; i < R; ++i) {
      __m512 a = _mm512_set1_ps(h[i * K + k]);
      c[i][0] = _mm512_fmadd_ps(a, w0, c[i][0]); c[i][1] = _mm512_fmadd_ps(a, w1, c[i][1]);
      c[i][2] = _mm512_fmadd_ps(a, w2, c[i][2]); c[i][3] = _mm512_fmadd_ps(a, w3, c[i][3]);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < 4; ++j) _mm512_storeu_ps(out + i * N + 16 * j, c[i][j]);
}

static void gemm_packed(const float* h, const float* wp, const float* bias, float* out,
                        int64_t b0, int64_t b1, int64_t K, int64_t N) {
  for (int64_t p = 0; p < N / 64; ++p) {
    const float* panel = wp + p * K * 64;
    const float* bp = bias ? bias + p * 64 : nullptr;
    int64_t b = b0;
    for (; b + 4 <= b1; b += 4) block<4>(h + b * K, panel, bp, out + b * N + p * 64, K, N);
    for (; b < b1; ++b) block<1>(h + b * K, panel, bp, out + b * N + p * 64, K, N);
  }
}


// exp, sigmoid and tanh on 16 floats: 2^(x log2 e) as 2^n (scalef) times a
// degree-6 polynomial of the fraction (relative error about 2e-7).
static inline __m512 exp16(__m512 x) {
  x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.f)), _mm512_set1_ps(-88.f));
  __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f));
  __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 f = _mm512_mul_ps(_mm512_sub_ps(t, n), _mm512_set1_ps(0.6931471805599453f));
  __m512 p = _mm512_set1_ps(1.f / 720);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f / 120));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f / 24));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f / 6));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(p, n);
}
static inline __m512 sigmoid16(__m512 x) {
  __m512 one = _mm512_set1_ps(1.f);
  return _mm512_div_ps(one, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}
static inline __m512 tanh16(__m512 x) {  // 2 sigmoid(2x) - 1
  __m512 s = sigmoid16(_mm512_add_ps(x, x));
  return _mm512_sub_ps(_mm512_add_ps(s, s), _mm512_set1_ps(1.f));
}


static void gates_rows(const float* xr, const float* xz, const float* xn, const float* hp,
                       const bool* valid, const float* hprev, float* hnew,
                       int64_t b0, int64_t b1, int64_t H) {
  for (int64_t b = b0; b < b1; ++b) {
    const float* p = hp + b * 3 * H;
    if (!valid[b]) { std::memcpy(hnew + b * H, hprev + b * H, H * 4); continue; }
    for (int64_t i = 0; i < H; i += 16) {
      __m512 r = sigmoid16(_mm512_add_ps(_mm512_loadu_ps(xr + b * H + i), _mm512_loadu_ps(p + i)));
      __m512 z = sigmoid16(_mm512_add_ps(_mm512_loadu_ps(xz + b * H + i), _mm512_loadu_ps(p + H + i)));
      __m512 n = tanh16(_mm512_fmadd_ps(r, _mm512_loadu_ps(p + 2 * H + i), _mm512_loadu_ps(xn + b * H + i)));
      __m512 h = _mm512_loadu_ps(hprev + b * H + i);
      _mm512_storeu_ps(hnew + b * H + i, _mm512_fmadd_ps(z, _mm512_sub_ps(h, n), n));
    }
  }
}

struct Latch {
  std::atomic<int> left;
  void wait() {
    for (int spins = 0; left.load(std::memory_order_acquire) > 0; ++spins)
      if (spins > 2000) sched_yield();
  }
};

// With two or more pool threads: run(0, half) here and run(half, B) on a
// thread of the pool (half: about B/2, a multiple of the 4-row block), then
// waits; else run(0, B).
template <typename Run>
static void on_two_threads(ffi::ThreadPool& pool, int64_t B, Run& run) {
  const int64_t half = std::min<int64_t>(B, (B / 2 + 3) / 4 * 4);
  if (pool.num_threads() < 2 || half >= B) {
    run(0, B);
    return;
  }
  Latch latch{1};
  pool.Schedule([&] { run(half, B); latch.left.fetch_sub(1, std::memory_order_release); });
  run(0, half);
  latch.wait();
}

ffi::Error GruForwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> w_h,
                          ffi::Buffer<ffi::F32> b_h, ffi::Buffer<ffi::F32> x_r,
                          ffi::Buffer<ffi::F32> x_z, ffi::Buffer<ffi::F32> x_n,
                          ffi::Buffer<ffi::PRED> valid, ffi::Buffer<ffi::F32> h0,
                          ffi::ResultBuffer<ffi::F32> seq, ffi::ResultBuffer<ffi::F32> hps) {
  auto d = x_r.dimensions();
  const int64_t T = d[0], B = d[1], H = d[2], N = 3 * H;
  if (N % 64) return ffi::Error::InvalidArgument("3*hidden must be a multiple of 64");
  std::vector<float> wpack(H * N);
  pack_panels(w_h.typed_data(), wpack.data(), H, N);
  const float* W = wpack.data();
  const float* bias = b_h.typed_data();
  float* out = seq->typed_data();
  float* hp_all = hps->typed_data();
  // Rows of the batch never interact in the recurrence: each thread runs its
  // rows through every step, with no synchronization until the end.
  auto run = [&](int64_t b0, int64_t b1) {
    for (int64_t t = 0; t < T; ++t) {
      const float* h = t == 0 ? h0.typed_data() : out + (t - 1) * B * H;
      float* hp = hp_all + t * B * N;
      float* hn = out + t * B * H;
      const bool* v = valid.typed_data() + t * B;
      const int64_t o = t * B * H;
      gemm_packed(h, W, bias, hp, b0, b1, H, N);
      gates_rows(x_r.typed_data() + o, x_z.typed_data() + o, x_n.typed_data() + o, hp, v, h, hn,
                 b0, b1, H);
    }
  };
  on_two_threads(pool, B, run);
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(GruForward, GruForwardImpl,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>()
    .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<Pred>().Arg<F32>()
    .Ret<Out>().Ret<Out>());

// Backward loop: per step, the gates' gradient (written out) and the carry's
// gradient carried back; the weight gradient is left to one matmul outside.
static void backward_rows(const float* grad_in, const float* g_out, const float* prev,
                          const float* xr, const float* xz, const float* xn, const float* hp,
                          const bool* valid, float* gates, float* dan, float* dh_keep,
                          int64_t b0, int64_t b1, int64_t H) {
  for (int64_t b = b0; b < b1; ++b) {
    const float* p = hp + b * 3 * H;
    float* g = gates + b * 3 * H;
    const float vm = valid[b] ? 1.f : 0.f;
    const __m512 vmv = _mm512_set1_ps(vm), one = _mm512_set1_ps(1.f);
    for (int64_t i = 0; i < H; i += 16) {
      __m512 dh = _mm512_add_ps(_mm512_loadu_ps(grad_in + b * H + i), _mm512_loadu_ps(g_out + b * H + i));
      __m512 r = sigmoid16(_mm512_add_ps(_mm512_loadu_ps(xr + b * H + i), _mm512_loadu_ps(p + i)));
      __m512 z = sigmoid16(_mm512_add_ps(_mm512_loadu_ps(xz + b * H + i), _mm512_loadu_ps(p + H + i)));
      __m512 hn = _mm512_loadu_ps(p + 2 * H + i);
      __m512 n = tanh16(_mm512_fmadd_ps(r, hn, _mm512_loadu_ps(xn + b * H + i)));
      __m512 dnew = _mm512_mul_ps(vmv, dh);
      __m512 omz = _mm512_sub_ps(one, z);
      __m512 da_n = _mm512_mul_ps(_mm512_mul_ps(dnew, omz), _mm512_fnmadd_ps(n, n, one));
      __m512 da_z = _mm512_mul_ps(_mm512_mul_ps(dnew, _mm512_sub_ps(_mm512_loadu_ps(prev + b * H + i), n)), _mm512_mul_ps(z, omz));
      __m512 da_r = _mm512_mul_ps(_mm512_mul_ps(da_n, hn), _mm512_mul_ps(r, _mm512_sub_ps(one, r)));
      _mm512_storeu_ps(g + i, da_r); _mm512_storeu_ps(g + H + i, da_z);
      _mm512_storeu_ps(g + 2 * H + i, _mm512_mul_ps(da_n, r));
      _mm512_storeu_ps(dan + b * H + i, da_n);
      _mm512_storeu_ps(dh_keep + b * H + i, _mm512_fnmadd_ps(dnew, omz, dh));
    }
  }
}

// grad[b, :H] = keep[b] + gates[b, :3H] @ wt[3H, H]
static void gemm_add_rows(const float* gates, const float* wt, const float* keep, float* out,
                          int64_t b0, int64_t b1, int64_t K, int64_t N) {
  gemm_packed(gates, wt, nullptr, out, b0, b1, K, N);
  for (int64_t b = b0; b < b1; ++b)
    for (int64_t j = 0; j < N; ++j) out[b * N + j] += keep[b * N + j];
}

ffi::Error GruBackwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> w_h,
                           ffi::Buffer<ffi::F32> grad_seq, ffi::Buffer<ffi::F32> seq,
                           ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::F32> x_r,
                           ffi::Buffer<ffi::F32> x_z, ffi::Buffer<ffi::F32> x_n,
                           ffi::Buffer<ffi::F32> hps, ffi::Buffer<ffi::PRED> valid,
                           ffi::ResultBuffer<ffi::F32> gates_out, ffi::ResultBuffer<ffi::F32> dan_out,
                           ffi::ResultBuffer<ffi::F32> grad0) {
  auto d = x_r.dimensions();
  const int64_t T = d[0], B = d[1], H = d[2], G = 3 * H;
  if (H % 64) return ffi::Error::InvalidArgument("hidden must be a multiple of 64");
  std::vector<float> wt(G * H), grad(B * H, 0.f), keep(B * H), next(B * H);
  const float* W = w_h.typed_data();
  for (int64_t i = 0; i < H; ++i)
    for (int64_t j = 0; j < G; ++j) wt[j * H + i] = W[i * G + j];
  std::vector<float> wtp(G * H);
  pack_panels(wt.data(), wtp.data(), G, H);
  // As in the forward pass, each thread carries its rows back through every step.
  auto run = [&](int64_t b0, int64_t b1) {
    float* cur = grad.data();
    float* nxt = next.data();
    for (int64_t t = T - 1; t >= 0; --t) {
      const float* prev = t == 0 ? h0.typed_data() : seq.typed_data() + (t - 1) * B * H;
      const int64_t o = t * B * H;
      float* gt = gates_out->typed_data() + t * B * G;
      backward_rows(cur, grad_seq.typed_data() + o, prev, x_r.typed_data() + o,
                    x_z.typed_data() + o, x_n.typed_data() + o, hps.typed_data() + t * B * G,
                    valid.typed_data() + t * B, gt, dan_out->typed_data() + o, keep.data(), b0, b1, H);
      gemm_add_rows(gt, wtp.data(), keep.data(), nxt, b0, b1, G, H);
      std::swap(cur, nxt);
    }
  };
  on_two_threads(pool, B, run);
  if (T % 2 == 1) grad.swap(next);  // the last step wrote `next`
  std::memcpy(grad0->typed_data(), grad.data(), B * H * 4);
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(GruBackward, GruBackwardImpl,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>()
    .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
    .Arg<F32>().Arg<Pred>().Ret<Out>().Ret<Out>().Ret<Out>());
