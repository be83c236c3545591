// A GRU layer on the CPU, forward and backward, each as one XLA FFI call:
// the kernel behind `seq2seq_jax.models.gru_cpu`.
//
// Same equations, gate order and masking as recurrent.run_layer (and
// recurrent_vjp.py's docstring): rows run their first `length` steps, their
// carry stays put after that and their outputs there are zero; with
// `reverse`, a row runs its real steps from the last to the first (the
// backward half of a bidirectional layer) and its outputs stay aligned with
// the input positions. Float32; hidden and input sizes multiples of 16.
//
// The input is either the layer's input x [B, T, E] with its weights w_i, b_i
// (the projection x w_i + b_i is done here, step by step), or, when w_i is
// empty, the projected input itself [B, T, 3H].
//
// Why it is faster than XLA's scan: one call runs every step (XLA's loop
// costs several microseconds per operation per step), each step's matmuls run
// near the CPU's peak (weights packed once per call into panels of columns,
// sums in register blocks of 6 x 48 on AVX-512, 6 x 16 on AVX2), the two
// cores each carry half of the batch's rows through all the steps with no
// synchronisation, inputs and outputs are read and written in the model's
// batch-major layout (no transposes around the call), and the backward pass
// adds up the weights' gradients as it goes.
//
// Leading dimensions (jax.vmap with vmap_method="broadcast_all", as for an
// ensemble) are independent problems, run one after the other.
//
// Compiled for AVX-512 here and for AVX2 by gru_layer_avx2.cc (kernels.h):
// the handlers GruLayerForward_avx512, GruLayerForward_avx2, and so on.
#include "kernels.h"

#ifdef SEQ2SEQ_CPU_KERNELS
#pragma GCC push_options
SEQ2SEQ_ISA_TARGET

namespace cpu_kernels::SEQ2SEQ_ISA {
namespace {

struct Sizes {
  int64_t B, T, E, H, G;
  bool projected;  // x is already x w_i + b_i
};

Sizes sizes_of(F32& x, F32& w_i, F32& w_h) {
  const auto xd = x.dimensions(), hd = w_h.dimensions();
  const int64_t H = hd[hd.size() - 2];
  return {xd[xd.size() - 3], xd[xd.size() - 2], xd[xd.size() - 1], H, 3 * H,
          w_i.element_count() == 0};
}

ffi::Error check(const Sizes& s) {
  if (s.H % 16 || s.E % 16)
    return ffi::Error::InvalidArgument("gru_layer: hidden and input sizes must be multiples of 16");
  return ffi::Error::Success();
}

// Where row b's step t reads its input and writes its output: t, or with
// `reverse` len - 1 - t for the row's real steps (padding stays in place).
inline int64_t position(int64_t t, int64_t len, bool reverse) {
  return reverse && t < len ? len - 1 - t : t;
}

ffi::Error Forward(ffi::ThreadPool pool, F32 x, F32 w_i, F32 b_i, F32 w_h, F32 b_h, S32 lengths,
                   F32 h0, bool reverse, Out out, Out final, Out seq, Out xps, Out hps) {
  const Sizes s = sizes_of(x, w_i, w_h);
  if (auto e = check(s); e.failure()) return e;
  const int64_t B = s.B, T = s.T, E = s.E, H = s.H, G = s.G;
  std::vector<float> wi_p(s.projected ? 0 : E * G), wh_p(H * G), gathered(B * E);
  std::vector<char> valid(B);
  for (int64_t q = 0; q < leading(x.dimensions(), 3); ++q) {
    if (!s.projected) pack_panels(w_i.typed_data() + q * E * G, wi_p.data(), E, G);
    pack_panels(w_h.typed_data() + q * H * G, wh_p.data(), H, G);
    const float* x_q = x.typed_data() + q * B * T * E;
    const float* bi = b_i.typed_data() + q * G;
    const float* bh = b_h.typed_data() + q * G;
    const int32_t* len = lengths.typed_data() + q * B;
    const float* h0_q = h0.typed_data() + q * B * H;
    float* out_q = out->typed_data() + q * B * T * H;
    float* seq_q = seq->typed_data() + q * T * B * H;
    float* xps_q = xps->typed_data() + q * T * B * G;
    float* hps_q = hps->typed_data() + q * T * B * G;
    on_two_threads(pool, B, [&](int64_t b0, int64_t b1) {
      for (int64_t t = 0; t < T; ++t) {
        const float* h = t == 0 ? h0_q : seq_q + (t - 1) * B * H;
        float* xp = xps_q + t * B * G;
        float* hp = hps_q + t * B * G;
        for (int64_t b = b0; b < b1; ++b) {
          valid[b] = t < len[b];
          const float* row = x_q + (b * T + position(t, len[b], reverse)) * E;
          std::memcpy((s.projected ? xp + b * G : gathered.data() + b * E), row, E * 4);
        }
        if (!s.projected) gemm_packed(gathered.data(), wi_p.data(), bi, xp, b0, b1, E, G);
        gemm_packed(h, wh_p.data(), bh, hp, b0, b1, H, G);
        float* hn = seq_q + t * B * H;
        gru_gates({xp, xp + H, xp + 2 * H, G}, hp, reinterpret_cast<const bool*>(valid.data()),
                  h, hn, b0, b1, H);
        for (int64_t b = b0; b < b1; ++b) {
          float* o = out_q + (b * T + position(t, len[b], reverse)) * H;
          if (valid[b]) std::memcpy(o, hn + b * H, H * 4);
          else std::fill(o, o + H, 0.f);
        }
      }
    });
    std::memcpy(final->typed_data() + q * B * H, seq_q + (T - 1) * B * H, B * H * 4);
  }
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::ThreadPool pool, F32 x, F32 w_i, F32 w_h, S32 lengths, F32 h0, F32 seq,
                    F32 xps, F32 hps, F32 d_out, F32 d_final, bool reverse, Out d_x, Out d_h0,
                    Out d_w_i, Out d_b_i, Out d_w_h, Out d_b_h) {
  const Sizes s = sizes_of(x, w_i, w_h);
  if (auto e = check(s); e.failure()) return e;
  const int64_t B = s.B, T = s.T, E = s.E, H = s.H, G = s.G, EI = s.projected ? 0 : E;
  std::vector<float> wiT(EI * G), whT(H * G), gathered(B * E), dxp(B * G), dhp(B * G),
      keep(B * H), grad(B * H), next(B * H), dx_rows(B * E);
  std::vector<char> valid(B);
  // The second thread's share of the weights' gradients: w_i, b_i, w_h, b_h.
  std::vector<float> other(EI * G + G + H * G + G);
  for (int64_t q = 0; q < leading(x.dimensions(), 3); ++q) {
    if (!s.projected) pack_transposed(w_i.typed_data() + q * E * G, wiT.data(), E, G);
    pack_transposed(w_h.typed_data() + q * H * G, whT.data(), H, G);
    const float* x_q = x.typed_data() + q * B * T * E;
    const int32_t* len = lengths.typed_data() + q * B;
    const float* h0_q = h0.typed_data() + q * B * H;
    const float* seq_q = seq.typed_data() + q * T * B * H;
    const float* xps_q = xps.typed_data() + q * T * B * G;
    const float* hps_q = hps.typed_data() + q * T * B * G;
    const float* dout_q = d_out.typed_data() + q * B * T * H;
    float* dx_q = d_x->typed_data() + q * B * T * E;
    float* mine[4] = {d_w_i->typed_data() + q * EI * G, d_b_i->typed_data() + q * G,
                      d_w_h->typed_data() + q * H * G, d_b_h->typed_data() + q * G};
    float* theirs[4] = {other.data(), other.data() + EI * G, other.data() + EI * G + G,
                        other.data() + EI * G + G + H * G};
    const int64_t count[4] = {EI * G, G, H * G, G};
    for (int i = 0; i < 4; ++i) std::fill(mine[i], mine[i] + count[i], 0.f);
    std::fill(other.begin(), other.end(), 0.f);
    std::memcpy(grad.data(), d_final.typed_data() + q * B * H, B * H * 4);
    // Each thread carries its rows back through every step; `cur` and `nxt`
    // swap roles each step.
    on_two_threads(pool, B, [&](int64_t b0, int64_t b1) {
      float** g = b0 == 0 ? mine : theirs;
      float* cur = grad.data();
      float* nxt = next.data();
      for (int64_t t = T - 1; t >= 0; --t) {
        const float* prev = t == 0 ? h0_q : seq_q + (t - 1) * B * H;
        const float* xp = xps_q + t * B * G;
        for (int64_t b = b0; b < b1; ++b) {  // the output's gradient joins the carried one
          valid[b] = t < len[b];
          if (!valid[b]) continue;
          const float* d = dout_q + (b * T + position(t, len[b], reverse)) * H;
          for (int64_t i = 0; i < H; ++i) cur[b * H + i] += d[i];
        }
        gru_gates_backward(cur, prev, {xp, xp + H, xp + 2 * H, G}, hps_q + t * B * G,
                           reinterpret_cast<const bool*>(valid.data()), dhp.data(),
                           dxp.data() + 2 * H, G, keep.data(), b0, b1, H);
        for (int64_t b = b0; b < b1; ++b)  // dxp = [da_r, da_z, da_n]
          std::memcpy(dxp.data() + b * G, dhp.data() + b * G, 2 * H * 4);
        std::memcpy(nxt + b0 * H, keep.data() + b0 * H, (b1 - b0) * H * 4);
        gemm_packed<true>(dhp.data(), whT.data(), nullptr, nxt, b0, b1, G, H);
        add_outer(prev + b0 * H, dhp.data() + b0 * G, b1 - b0, g[2], g[3], H, G);
        // The input's gradient, and the input weights' (rows of padding have dxp = 0).
        const float* dxr = dxp.data();
        if (!s.projected) {
          for (int64_t b = b0; b < b1; ++b)
            std::memcpy(gathered.data() + b * E,
                        x_q + (b * T + position(t, len[b], reverse)) * E, E * 4);
          add_outer(gathered.data() + b0 * E, dxp.data() + b0 * G, b1 - b0, g[0], g[1], E, G);
          gemm_packed(dxp.data(), wiT.data(), nullptr, dx_rows.data(), b0, b1, G, E);
          dxr = dx_rows.data();
        }
        for (int64_t b = b0; b < b1; ++b)
          std::memcpy(dx_q + (b * T + position(t, len[b], reverse)) * E, dxr + b * E, E * 4);
        std::swap(cur, nxt);
      }
    });
    for (int i = 0; i < 4; ++i)
      for (int64_t j = 0; j < count[i]; ++j) mine[i][j] += theirs[i][j];
    const float* last = T % 2 == 1 ? next.data() : grad.data();  // after T swaps
    std::memcpy(d_h0->typed_data() + q * B * H, last, B * H * 4);
  }
  return ffi::Error::Success();
}

}  // namespace
}  // namespace cpu_kernels::SEQ2SEQ_ISA

#pragma GCC pop_options

XLA_FFI_DEFINE_HANDLER_SYMBOL(SEQ2SEQ_ISA_SYMBOL(GruLayerForward),
                              cpu_kernels::SEQ2SEQ_ISA::Forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>()    // x [..., B, T, E] (or x w_i + b_i, E = 3H)
                                  .Arg<F32>()    // w_i [..., E, 3H], or empty
                                  .Arg<F32>()    // b_i [..., 3H]
                                  .Arg<F32>()    // w_h [..., H, 3H]
                                  .Arg<F32>()    // b_h [..., 3H]
                                  .Arg<S32>()    // lengths [..., B]
                                  .Arg<F32>()    // h0 [..., B, H]
                                  .Attr<bool>("reverse")
                                  .Ret<F32>()    // outputs [..., B, T, H], zero on padding
                                  .Ret<F32>()    // the final carry [..., B, H]
                                  .Ret<F32>()    // the carry after each step [..., T, B, H]
                                  .Ret<F32>()    // x w_i + b_i at each step [..., T, B, 3H]
                                  .Ret<F32>());  // h w_h + b_h at each step [..., T, B, 3H]

XLA_FFI_DEFINE_HANDLER_SYMBOL(SEQ2SEQ_ISA_SYMBOL(GruLayerBackward),
                              cpu_kernels::SEQ2SEQ_ISA::Backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>()    // x
                                  .Arg<F32>()    // w_i
                                  .Arg<F32>()    // w_h
                                  .Arg<S32>()    // lengths
                                  .Arg<F32>()    // h0
                                  .Arg<F32>()    // the carries (forward)
                                  .Arg<F32>()    // x w_i + b_i (forward)
                                  .Arg<F32>()    // h w_h + b_h (forward)
                                  .Arg<F32>()    // the gradient of the outputs [..., B, T, H]
                                  .Arg<F32>()    // ... of the final carry [..., B, H]
                                  .Attr<bool>("reverse")
                                  .Ret<F32>()    // d x
                                  .Ret<F32>()    // d h0
                                  .Ret<F32>()    // d w_i (empty if w_i is)
                                  .Ret<F32>()    // d b_i (zero if w_i is empty)
                                  .Ret<F32>()    // d w_h
                                  .Ret<F32>());  // d b_h
#endif
