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
// batch-major layout (no transposes around the call), the backward pass
// adds up the weights' gradients as it goes, and padding costs no matmul:
// each step multiplies only the rows still running (see Order), as
// PyTorch's packed sequences do.
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

// The forward pass keeps, per step, the carries and both pre-activations in
// slot order (`seq`, `xps`, `hps`: the backward pass's residuals); those of
// a finished row are not computed, and only its carry is copied along.
ffi::Error Forward(ffi::ThreadPool pool, F32 x, F32 w_i, F32 b_i, F32 w_h, F32 b_h, S32 lengths,
                   F32 h0, bool reverse, Out out, Out final, Out seq, Out xps, Out hps) {
  const Sizes s = sizes_of(x, w_i, w_h);
  if (auto e = check(s); e.failure()) return e;
  const int64_t B = s.B, T = s.T, E = s.E, H = s.H, G = s.G;
  std::vector<float> wi_p(s.projected ? 0 : E * G), wh_p(H * G), gathered(B * E), h0s(B * H);
  const int64_t split = two_thread_split(pool, B);
  for (int64_t q = 0; q < leading(x.dimensions(), 3); ++q) {
    if (!s.projected) pack_panels(w_i.typed_data() + q * E * G, wi_p.data(), E, G);
    pack_panels(w_h.typed_data() + q * H * G, wh_p.data(), H, G);
    const Order order(lengths.typed_data() + q * B, B, T, split);
    const float* x_q = x.typed_data() + q * B * T * E;
    const float* bi = b_i.typed_data() + q * G;
    const float* bh = b_h.typed_data() + q * G;
    order.to_slots(h0.typed_data() + q * B * H, h0s.data(), H);
    float* out_q = out->typed_data() + q * B * T * H;
    float* seq_q = seq->typed_data() + q * T * B * H;
    float* xps_q = xps->typed_data() + q * T * B * G;
    float* hps_q = hps->typed_data() + q * T * B * G;
    on_two_threads(pool, B, [&](int64_t s0, int64_t s1) {
      for (int64_t t = 0; t < T; ++t) {
        const float* h = t == 0 ? h0s.data() : seq_q + (t - 1) * B * H;
        float* xp = xps_q + t * B * G;
        float* hp = hps_q + t * B * G;
        float* hn = seq_q + t * B * H;
        const int64_t run = order.running_end(s0, s1, t);
        for (int64_t b = s0; b < run; ++b) {
          const float* in = x_q + (order.row[b] * T + position(t, order.len[b], reverse)) * E;
          std::memcpy((s.projected ? xp + b * G : gathered.data() + b * E), in, E * 4);
        }
        if (run > s0) {
          if (!s.projected) gemm_packed(gathered.data(), wi_p.data(), bi, xp, s0, run, E, G);
          gemm_packed(h, wh_p.data(), bh, hp, s0, run, H, G);
          gru_gates({xp, xp + H, xp + 2 * H, G}, hp, h, hn, s0, run, H);
        }
        std::memcpy(hn + run * H, h + run * H, (s1 - run) * H * 4);  // finished: carry stays
        for (int64_t b = s0; b < s1; ++b) {
          float* o = out_q + (order.row[b] * T + position(t, order.len[b], reverse)) * H;
          if (b < run) std::memcpy(o, hn + b * H, H * 4);
          else std::fill(o, o + H, 0.f);
        }
      }
    });
    order.to_rows(T > 0 ? seq_q + (T - 1) * B * H : h0s.data(),
                  final->typed_data() + q * B * H, H);
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
      keep(B * H), grad(B * H), next(B * H), dx_rows(B * E), h0s(B * H);
  // The second thread's share of the weights' gradients: w_i, b_i, w_h, b_h.
  std::vector<float> other(EI * G + G + H * G + G);
  const int64_t split = two_thread_split(pool, B);
  for (int64_t q = 0; q < leading(x.dimensions(), 3); ++q) {
    if (!s.projected) pack_transposed(w_i.typed_data() + q * E * G, wiT.data(), E, G);
    pack_transposed(w_h.typed_data() + q * H * G, whT.data(), H, G);
    const Order order(lengths.typed_data() + q * B, B, T, split);
    const float* x_q = x.typed_data() + q * B * T * E;
    order.to_slots(h0.typed_data() + q * B * H, h0s.data(), H);
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
    order.to_slots(d_final.typed_data() + q * B * H, grad.data(), H);
    // Each thread carries its rows back through every step; `cur` and `nxt`
    // swap roles each step.
    on_two_threads(pool, B, [&](int64_t s0, int64_t s1) {
      float** g = s0 == 0 ? mine : theirs;
      float* cur = grad.data();
      float* nxt = next.data();
      for (int64_t t = T - 1; t >= 0; --t) {
        const float* prev = t == 0 ? h0s.data() : seq_q + (t - 1) * B * H;
        const float* xp = xps_q + t * B * G;
        const int64_t run = order.running_end(s0, s1, t), n = run - s0;
        for (int64_t b = s0; b < run; ++b) {  // the output's gradient joins the carried one
          const float* d = dout_q + (order.row[b] * T + position(t, order.len[b], reverse)) * H;
          for (int64_t i = 0; i < H; ++i) cur[b * H + i] += d[i];
        }
        if (n > 0) {
          gru_gates_backward(cur, prev, {xp, xp + H, xp + 2 * H, G}, hps_q + t * B * G,
                             dhp.data(), dxp.data() + 2 * H, G, keep.data(), s0, run, H);
          for (int64_t b = s0; b < run; ++b)  // dxp = [da_r, da_z, da_n]
            std::memcpy(dxp.data() + b * G, dhp.data() + b * G, 2 * H * 4);
          std::memcpy(nxt + s0 * H, keep.data() + s0 * H, n * H * 4);
          gemm_packed<true>(dhp.data(), whT.data(), nullptr, nxt, s0, run, G, H);
          add_outer(prev + s0 * H, dhp.data() + s0 * G, n, g[2], g[3], H, G);
          // The input's gradient, and the input weights'.
          const float* dxr = dxp.data();
          if (!s.projected) {
            for (int64_t b = s0; b < run; ++b)
              std::memcpy(gathered.data() + b * E,
                          x_q + (order.row[b] * T + position(t, order.len[b], reverse)) * E,
                          E * 4);
            add_outer(gathered.data() + s0 * E, dxp.data() + s0 * G, n, g[0], g[1], E, G);
            gemm_packed(dxp.data(), wiT.data(), nullptr, dx_rows.data(), s0, run, G, E);
            dxr = dx_rows.data();
          }
          for (int64_t b = s0; b < run; ++b)
            std::memcpy(dx_q + (order.row[b] * T + position(t, order.len[b], reverse)) * E,
                        dxr + b * E, E * 4);
        }
        // Finished rows: the carry's gradient passes through, the input's is zero.
        std::memcpy(nxt + run * H, cur + run * H, (s1 - run) * H * 4);
        for (int64_t b = run; b < s1; ++b) {
          float* d = dx_q + (order.row[b] * T + t) * E;
          std::fill(d, d + E, 0.f);
        }
        std::swap(cur, nxt);
      }
    });
    for (int i = 0; i < 4; ++i)
      for (int64_t j = 0; j < count[i]; ++j) mine[i][j] += theirs[i][j];
    const float* last = T % 2 == 1 ? next.data() : grad.data();  // after T swaps
    order.to_rows(last, d_h0->typed_data() + q * B * H, H);
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
