// A GRU layer's recurrence, forward and backward, each as one XLA FFI call on
// the CPU: the probe of tools/ffi_gru/probe.py (issue 17's fused-kernel
// lever), not used by the package. Same equations, gate order and masking as
// seq2seq_jax/models/recurrent_vjp.py; float32; 3 * hidden a multiple of 64.
// Each step's matmul (a 4 x 64 register block over packed weights) is split by
// rows over two threads of XLA's intra-op pool.
#include <atomic>
#include <sched.h>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <vector>
#include <algorithm>
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using F32 = ffi::Buffer<ffi::F32>;
using Pred = ffi::Buffer<ffi::PRED>;
using Out = ffi::Buffer<ffi::F32>;  // a result
typedef float v16 __attribute__((vector_size(64)));

static inline v16 load16(const float* p) { v16 v; std::memcpy(&v, p, 64); return v; }
static inline void store16(float* p, v16 v) { std::memcpy(p, &v, 64); }

// The recurrent weights are packed once per call into 64-column panels
// ([N/64][K][64], each panel contiguous), which each step's matmul streams.
static void pack_panels(const float* w, float* wp, int64_t K, int64_t N) {
  for (int64_t p = 0; p < N / 64; ++p)
    for (int64_t k = 0; k < K; ++k)
      std::memcpy(wp + (p * K + k) * 64, w + k * N + p * 64, 64 * sizeof(float));
}

// out[rows b0..b1, :N] = bias + h[b0..b1, :K] @ w, w packed by pack_panels.
static void gemm_packed(const float* h, const float* wp, const float* bias, float* out,
                        int64_t b0, int64_t b1, int64_t K, int64_t N) {
  for (int64_t p = 0; p < N / 64; ++p) {
    const float* panel = wp + p * K * 64;
    const int64_t j0 = p * 64;
    for (int64_t b = b0; b < b1; b += 4) {
      const int rows = (int)std::min<int64_t>(4, b1 - b);
      v16 acc[4][4];
      for (int c = 0; c < 4; ++c) {
        v16 bv = bias ? load16(bias + j0 + 16 * c) : v16{};
        for (int r = 0; r < 4; ++r) acc[r][c] = bv;
      }
      if (rows == 4) {
        for (int64_t k = 0; k < K; ++k) {
          const float* wk = panel + k * 64;
          v16 w0 = load16(wk), w1 = load16(wk + 16), w2 = load16(wk + 32), w3 = load16(wk + 48);
          for (int r = 0; r < 4; ++r) {
            v16 av = h[(b + r) * K + k] - v16{};
            acc[r][0] += av * w0; acc[r][1] += av * w1; acc[r][2] += av * w2; acc[r][3] += av * w3;
          }
        }
      } else {
        for (int64_t k = 0; k < K; ++k) {
          const float* wk = panel + k * 64;
          v16 w0 = load16(wk), w1 = load16(wk + 16), w2 = load16(wk + 32), w3 = load16(wk + 48);
          for (int r = 0; r < rows; ++r) {
            v16 av = h[(b + r) * K + k] - v16{};
            acc[r][0] += av * w0; acc[r][1] += av * w1; acc[r][2] += av * w2; acc[r][3] += av * w3;
          }
        }
      }
      for (int r = 0; r < rows; ++r)
        for (int c = 0; c < 4; ++c) store16(out + (b + r) * N + j0 + 16 * c, acc[r][c]);
    }
  }
}

static inline float sigmoid(float x) { return 1.f / (1.f + std::exp(-x)); }

static void gates_rows(const float* xr, const float* xz, const float* xn, const float* hp,
                       const bool* valid, const float* hprev, float* hnew,
                       int64_t b0, int64_t b1, int64_t H) {
  for (int64_t b = b0; b < b1; ++b) {
    const float* p = hp + b * 3 * H;
    if (!valid[b]) { std::memcpy(hnew + b * H, hprev + b * H, H * 4); continue; }
#pragma omp simd
    for (int64_t i = 0; i < H; ++i) {
      float r = sigmoid(xr[b * H + i] + p[i]);
      float z = sigmoid(xz[b * H + i] + p[H + i]);
      float n = std::tanh(xn[b * H + i] + r * p[2 * H + i]);
      hnew[b * H + i] = (1.f - z) * n + z * hprev[b * H + i];
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
  int64_t threads = pool.num_threads();
  int64_t parts = threads >= 2 ? 2 : 1;
  int64_t half = ((B / 2) + 3) / 4 * 4;
  if (half > B) half = B;
  for (int64_t t = 0; t < T; ++t) {
    const float* h = t == 0 ? h0.typed_data() : out + (t - 1) * B * H;
    float* hp = hp_all + t * B * N;
    float* hn = out + t * B * H;
    const bool* v = valid.typed_data() + t * B;
    const float* xr = x_r.typed_data() + t * B * H;
    const float* xz = x_z.typed_data() + t * B * H;
    const float* xn = x_n.typed_data() + t * B * H;
    if (parts == 2) {
      Latch latch{1};
      pool.Schedule([&, half] {
        gemm_packed(h, W, bias, hp, half, B, H, N);
        gates_rows(xr, xz, xn, hp, v, h, hn, half, B, H);
        latch.left.fetch_sub(1, std::memory_order_release);
      });
      gemm_packed(h, W, bias, hp, 0, half, H, N);
      gates_rows(xr, xz, xn, hp, v, h, hn, 0, half, H);
      latch.wait();
    } else {
      gemm_packed(h, W, bias, hp, 0, B, H, N);
      gates_rows(xr, xz, xn, hp, v, h, hn, 0, B, H);
    }
  }
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
#pragma omp simd
    for (int64_t i = 0; i < H; ++i) {
      float dh = grad_in[b * H + i] + g_out[b * H + i];
      float r = sigmoid(xr[b * H + i] + p[i]);
      float z = sigmoid(xz[b * H + i] + p[H + i]);
      float hn = p[2 * H + i];
      float n = std::tanh(xn[b * H + i] + r * hn);
      float dnew = vm * dh;
      float da_n = dnew * (1.f - z) * (1.f - n * n);
      float da_z = dnew * (prev[b * H + i] - n) * z * (1.f - z);
      float da_r = da_n * hn * r * (1.f - r);
      g[i] = da_r; g[H + i] = da_z; g[2 * H + i] = da_n * r;
      dan[b * H + i] = da_n;
      dh_keep[b * H + i] = dh - vm * dh * (1.f - z);
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
  int64_t parts = pool.num_threads() >= 2 ? 2 : 1;
  int64_t half = parts == 2 ? std::min<int64_t>(B, ((B / 2) + 3) / 4 * 4) : B;
  for (int64_t t = T - 1; t >= 0; --t) {
    const float* prev = t == 0 ? h0.typed_data() : seq.typed_data() + (t - 1) * B * H;
    const int64_t o = t * B * H;
    float* gt = gates_out->typed_data() + t * B * G;
    float* dn = dan_out->typed_data() + o;
    auto work = [&](int64_t b0, int64_t b1) {
      backward_rows(grad.data(), grad_seq.typed_data() + o, prev, x_r.typed_data() + o,
                    x_z.typed_data() + o, x_n.typed_data() + o, hps.typed_data() + t * B * G,
                    valid.typed_data() + t * B, gt, dn, keep.data(), b0, b1, H);
      gemm_add_rows(gt, wtp.data(), keep.data(), next.data(), b0, b1, G, H);
    };
    if (parts == 2 && half < B) {
      Latch latch{1};
      pool.Schedule([&] { work(half, B); latch.left.fetch_sub(1, std::memory_order_release); });
      work(0, half);
      latch.wait();
    } else {
      work(0, B);
    }
    grad.swap(next);
  }
  std::memcpy(grad0->typed_data(), grad.data(), B * H * 4);
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(GruBackward, GruBackwardImpl,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>()
    .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
    .Arg<F32>().Arg<Pred>().Ret<Out>().Ret<Out>().Ret<Out>());
