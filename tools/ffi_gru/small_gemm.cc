// How fast can one recurrent step's matmul run on this CPU? C[64 x 768] =
// A[64 x 256] B[256 x 768] (a GRU step at batch 64, hidden 256), B packed once
// into 48-column panels, a 6 x 48 AVX-512 register block, rows split over
// OpenMP threads. XLA's scan does this matmul in about 100 us on 2 cores
// (docs/results.md); compare:
//   g++ -O3 -march=native -fopenmp -std=c++17 tools/ffi_gru/small_gemm.cc -o /tmp/small_gemm
//   /tmp/small_gemm
#include <immintrin.h>
#include <omp.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
constexpr int M = 64, K = 256, N = 768, NP = 48, MR = 6;
// packed B: for each panel p: K rows x 48 floats contiguous
static void pack(const float* B, float* Bp) {
  for (int p = 0; p < N / NP; ++p)
    for (int k = 0; k < K; ++k)
      std::memcpy(Bp + (size_t)p * K * NP + k * NP, B + k * N + p * NP, NP * sizeof(float));
}
static inline void kernel(const float* A, const float* Bp, float* C, int rows) {
  __m512 c[MR][3];
  for (int i = 0; i < MR; ++i) for (int j = 0; j < 3; ++j) c[i][j] = _mm512_setzero_ps();
  for (int k = 0; k < K; ++k) {
    __m512 b0 = _mm512_loadu_ps(Bp + k * NP), b1 = _mm512_loadu_ps(Bp + k * NP + 16),
           b2 = _mm512_loadu_ps(Bp + k * NP + 32);
    for (int i = 0; i < MR; ++i) {
      if (i >= rows) break;
      __m512 a = _mm512_set1_ps(A[i * K + k]);
      c[i][0] = _mm512_fmadd_ps(a, b0, c[i][0]);
      c[i][1] = _mm512_fmadd_ps(a, b1, c[i][1]);
      c[i][2] = _mm512_fmadd_ps(a, b2, c[i][2]);
    }
  }
  for (int i = 0; i < rows; ++i) for (int j = 0; j < 3; ++j) _mm512_storeu_ps(C + i * N + j * 16, c[i][j]);
}
static void gemm(const float* A, const float* Bp, float* C, int threads) {
  #pragma omp parallel num_threads(threads)
  {
    int t = omp_get_thread_num(), nt = omp_get_num_threads();
    int r0 = M * t / nt, r1 = M * (t + 1) / nt;
    for (int p = 0; p < N / NP; ++p)
      for (int i0 = r0; i0 < r1; i0 += MR)
        kernel(A + i0 * K, Bp + (size_t)p * K * NP, C + i0 * N + p * NP, r1 - i0 < MR ? r1 - i0 : MR);
  }
}
int main() {
  std::vector<float> A(M * K), B(K * N), Bp(K * N), C(M * N), R(M * N, 0.f);
  for (auto& x : A) x = rand() / (float)RAND_MAX - 0.5f;
  for (auto& x : B) x = rand() / (float)RAND_MAX - 0.5f;
  pack(B.data(), Bp.data());
  for (int i = 0; i < M; ++i) for (int k = 0; k < K; ++k) for (int j = 0; j < N; ++j) R[i * N + j] += A[i * K + k] * B[k * N + j];
  for (int threads : {1, 2}) {
    gemm(A.data(), Bp.data(), C.data(), threads);
    double err = 0; for (int i = 0; i < M * N; ++i) err = std::max(err, (double)std::abs(C[i] - R[i]));
    int reps = 3000;
    auto t0 = std::chrono::steady_clock::now();
    for (int r = 0; r < reps; ++r) { A[r % (M*K)] += 1e-7f; gemm(A.data(), Bp.data(), C.data(), threads); }
    double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / reps;
    std::printf("threads %d: %.1f us per GEMM, %.0f GFLOP/s, max err %.2e\n", threads, us, 2.0 * M * K * N / us / 1e3, err);
  }
}
