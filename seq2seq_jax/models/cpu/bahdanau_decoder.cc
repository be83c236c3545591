// The teacher-forced loop of a Bahdanau attention decoder with GRU layers,
// forward and backward, each as one XLA FFI call: the kernel behind
// `seq2seq_jax.models.decoder_cpu`. Float32; embedding, hidden, attention
// and memory sizes multiples of 16.
//
// Before the loop, the keys k = m w_k + b_k of the memory m. Step t, as
// RNNSeq2Seq._step computes it for decoder="bahdanau" (additive score,
// softmax, GRU layers):
//   q = h_top(t-1) w_q;  s_j = v . tanh(k_j + q) for j < src_len;
//   a = softmax(s);  c = sum_j a_j m_j;
//   layer 0: GRU on x = e_t w_ie + c w_ic + b_i (e: the target embeddings;
//   w_ie, w_ic: the embedding's and the context's rows of layer 0's w_i);
//   layer l > 0: GRU on x = (h_{l-1}(t) * m_{t,l}) w_i[l] + b_i[l], where the
//   dropout mask m (0, or 1 / the keep probability) is drawn outside, by the
//   same keys as the model's scan, or absent (no dropout).
// Outputs per step: the top layer's state, the context c and the weights a.
// The forward pass also keeps the keys, every layer's carries, both
// pre-activations and q for the backward pass, which recomputes tanh(k + q).
//
// As in gru_layer.cc, the batch's rows run on two threads with no
// synchronisation between steps (nothing mixes rows), inputs and outputs are
// in the model's batch-major layout, and the weights' gradients are added up
// as the backward pass goes (per thread, summed at the end). Leading
// dimensions (jax.vmap, as for an ensemble) are independent problems, run one
// after the other. Compiled for AVX-512 here and for AVX2 by
// bahdanau_decoder_avx2.cc (kernels.h).
#include <cmath>

#include "kernels.h"

#ifdef SEQ2SEQ_CPU_KERNELS
#pragma GCC push_options
SEQ2SEQ_ISA_TARGET

namespace cpu_kernels::SEQ2SEQ_ISA {
namespace {

struct Dims {
  int64_t T, B, E, H, G, S, A, D, L;
};

// From e [..., B, T, E], memory [..., B, S, D], w_k [..., D, A], h0 [..., L, B, H].
Dims dims_of(F32& e, F32& memory, F32& w_k, F32& h0) {
  const auto ed = e.dimensions(), md = memory.dimensions(), kd = w_k.dimensions(),
             hd = h0.dimensions();
  const int64_t H = hd[hd.size() - 1];
  return {ed[ed.size() - 2], ed[ed.size() - 3], ed[ed.size() - 1], H, 3 * H,
          md[md.size() - 2], kd[kd.size() - 1], md[md.size() - 1], hd[hd.size() - 3]};
}

ffi::Error check(const Dims& d) {
  if (d.E % 16 || d.H % 16 || d.A % 16 || d.D % 16)
    return ffi::Error::InvalidArgument(
        "bahdanau_decoder: embedding, hidden, attention and memory sizes must be multiples of 16");
  return ffi::Error::Success();
}

// The decoder's weights, packed for the forward pass's matmuls, or transposed
// for the backward pass's.
struct Packed {
  std::vector<float> ie, ic, k, q, h, i;
  Packed(const Dims& d)
      : ie(d.E * d.G), ic(d.D * d.G), k(d.D * d.A), q(d.H * d.A), h(d.L * d.H * d.G),
        i((d.L - 1) * d.H * d.G) {}
  void pack(const Dims& d, int64_t p, bool transposed, F32& w_ie, F32& w_ic, F32& w_k, F32& w_q,
            F32& w_h, F32& w_i) {
    auto one = [&](F32& w, int64_t index, std::vector<float>& out, int64_t offset, int64_t K,
                   int64_t N) {
      const float* src = w.typed_data() + index * K * N;
      if (transposed) pack_transposed(src, out.data() + offset, K, N);
      else pack_panels(src, out.data() + offset, K, N);
    };
    one(w_ie, p, ie, 0, d.E, d.G);
    one(w_ic, p, ic, 0, d.D, d.G);
    one(w_k, p, k, 0, d.D, d.A);
    one(w_q, p, q, 0, d.H, d.A);
    for (int64_t l = 0; l < d.L; ++l) one(w_h, p * d.L + l, h, l * d.H * d.G, d.H, d.G);
    for (int64_t l = 0; l + 1 < d.L; ++l)
      one(w_i, p * (d.L - 1) + l, i, l * d.H * d.G, d.H, d.G);
  }
};

// The attention of rows b0:b1 at one step: weights a [B, S] and context
// c [B, D] from the query q [B, A].
void attend_rows(const Dims& d, const float* keys, const float* values, const int32_t* src_len,
                 const float* v, const float* q, float* weights, float* context, int64_t b0,
                 int64_t b1) {
  const int64_t S = d.S, A = d.A, D = d.D;
  std::vector<float> s(S);
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t len = std::clamp<int64_t>(src_len[b], 0, S);
    const float* kb = keys + b * S * A;
    const float* qb = q + b * A;
    float* w = weights + b * S;
    float top = -INFINITY;
    for (int64_t j = 0; j < len; ++j) {
      Vec acc = set1(0.f);
      for (int64_t a = 0; a < A; a += 16)
        acc = fmadd(tanh16(add(load(kb + j * A + a), load(qb + a))), load(v + a), acc);
      s[j] = reduce_add(acc);
      top = std::max(top, s[j]);
    }
    float sum = 0.f;
    for (int64_t j = 0; j < len; ++j) sum += (s[j] = std::exp(s[j] - top));
    for (int64_t j = 0; j < S; ++j) w[j] = j < len ? s[j] / sum : 0.f;
    const float* mb = values + b * S * D;
    for (int64_t i = 0; i < D; i += 16) {
      Vec acc = set1(0.f);
      for (int64_t j = 0; j < len; ++j)
        acc = fmadd(set1(w[j]), load(mb + j * D + i), acc);
      store(context + b * D + i, acc);
    }
  }
}

// Layer l's input at step t for rows b0:b1 (l > 0): the layer below's new
// carry, times its dropout mask if there is one (then written to `scratch`).
const float* layer_input(const float* below, const float* masks, int64_t t, int64_t l,
                         const Dims& d, float* scratch, int64_t b0, int64_t b1) {
  if (!masks) return below;
  const float* m = masks + (t * (d.L - 1) + l - 1) * d.B * d.H;
  for (int64_t i = b0 * d.H; i < b1 * d.H; ++i) scratch[i] = below[i] * m[i];
  return scratch;
}

// What both passes read of problem p of the stack, and every layer's carries.
struct Problem {
  const Dims& d;
  const float *e, *memory, *h0, *v, *masks, *carries;  // masks: null without dropout
  const int32_t* len;
  Problem(const Dims& d, int64_t p, F32& e_, F32& memory_, S32& src_len, F32& h0_, F32& v_,
          F32& masks_, const float* all_carries)
      : d(d),
        e(e_.typed_data() + p * d.B * d.T * d.E),
        memory(memory_.typed_data() + p * d.B * d.S * d.D),
        h0(h0_.typed_data() + p * d.L * d.B * d.H),
        v(v_.typed_data() + p * d.A),
        masks(masks_.element_count() > 0
                  ? masks_.typed_data() + p * d.T * (d.L - 1) * d.B * d.H : nullptr),
        carries(all_carries + p * d.T * d.L * d.B * d.H),
        len(src_len.typed_data() + p * d.B) {}
  // Layer l's carry after step t (t = -1: h0).
  const float* carry(int64_t t, int64_t l) const {
    return t < 0 ? h0 + l * d.B * d.H : carries + (t * d.L + l) * d.B * d.H;
  }
};

ffi::Error Forward(ffi::ThreadPool pool, F32 e, F32 memory, S32 src_len, F32 h0, F32 w_ie,
                   F32 b_i0, F32 w_ic, F32 w_k, F32 b_k, F32 w_q, F32 v, F32 w_h, F32 b_h,
                   F32 w_i, F32 b_i, F32 masks, Out tops, Out contexts, Out weights, Out keys,
                   Out carries, Out hps, Out xps, Out qs) {
  const Dims d = dims_of(e, memory, w_k, h0);
  if (auto err = check(d); err.failure()) return err;
  const int64_t T = d.T, B = d.B, E = d.E, H = d.H, G = d.G, S = d.S, A = d.A, D = d.D, L = d.L;
  Packed w(d);
  std::vector<float> dropped(B * H);
  for (int64_t p = 0; p < leading(e.dimensions(), 3); ++p) {
    w.pack(d, p, false, w_ie, w_ic, w_k, w_q, w_h, w_i);
    const Problem pr(d, p, e, memory, src_len, h0, v, masks, carries->typed_data());
    const float* bi0_p = b_i0.typed_data() + p * G;
    const float* bk_p = b_k.typed_data() + p * A;
    const float* bh_p = b_h.typed_data() + p * L * G;
    const float* bi_p = b_i.typed_data() + p * (L - 1) * G;
    float* tops_p = tops->typed_data() + p * T * B * H;
    float* ctx_p = contexts->typed_data() + p * T * B * D;
    float* w_p = weights->typed_data() + p * T * B * S;
    float* k_p = keys->typed_data() + p * B * S * A;
    float* car_p = carries->typed_data() + p * T * L * B * H;
    float* hps_p = hps->typed_data() + p * T * L * B * G;
    float* xps_p = xps->typed_data() + p * T * L * B * G;
    float* qs_p = qs->typed_data() + p * T * B * A;
    on_two_threads(pool, B, [&](int64_t b0, int64_t b1) {
      const int64_t rows = b1 - b0;
      gemm_packed(pr.memory, w.k.data(), bk_p, k_p, b0 * S, b1 * S, D, A);  // the keys of these rows
      for (int64_t t = 0; t < T; ++t) {
        float* q = qs_p + t * B * A;
        float* ctx = ctx_p + t * B * D;
        gemm_packed(pr.carry(t - 1, L - 1), w.q.data(), nullptr, q, b0, b1, H, A);
        attend_rows(d, k_p, pr.memory, pr.len, pr.v, q, w_p + t * B * S, ctx, b0, b1);
        for (int64_t l = 0; l < L; ++l) {
          float* x = xps_p + (t * L + l) * B * G;
          float* hp = hps_p + (t * L + l) * B * G;
          if (l == 0) {  // e_t w_ie + b_i (e's rows are T * E apart), + c w_ic
            gemm_packed(pr.e + t * E, w.ie.data(), bi0_p, x, b0, b1, E, G, T * E);
            gemm_packed<true>(ctx, w.ic.data(), nullptr, x, b0, b1, D, G);
          } else {
            const float* in = layer_input(pr.carry(t, l - 1), pr.masks, t, l, d, dropped.data(), b0, b1);
            gemm_packed(in, w.i.data() + (l - 1) * H * G, bi_p + (l - 1) * G, x, b0, b1, H, G);
          }
          gemm_packed(pr.carry(t - 1, l), w.h.data() + l * H * G, bh_p + l * G, hp, b0, b1, H, G);
          gru_gates({x, x + H, x + 2 * H, G}, hp, pr.carry(t - 1, l),
                    car_p + (t * L + l) * B * H, b0, b1, H);
        }
        std::memcpy(tops_p + (t * B + b0) * H, pr.carry(t, L - 1) + b0 * H, rows * H * 4);
      }
    });
  }
  return ffi::Error::Success();
}

// The attention's backward pass for rows b0:b1 at one step: from the
// context's gradient dc [B, D] and the weights' gradient dw [B, S], adds to
// the memory's and keys' gradients (dm [B, S, D], dk [B, S, A]) and to dv
// [A], and writes the query's gradient dq [B, A].
void attend_rows_backward(const Dims& d, const float* keys, const float* values,
                          const int32_t* src_len, const float* v, const float* q,
                          const float* weights, const float* dc, const float* dw, float* dm,
                          float* dk, float* dv, float* dq, int64_t b0, int64_t b1) {
  const int64_t S = d.S, A = d.A, D = d.D;
  std::vector<float> ds(S);
  const Vec one = set1(1.f);
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t len = std::clamp<int64_t>(src_len[b], 0, S);
    const float* w = weights + b * S;
    const float* mb = values + b * S * D;
    const float* dcb = dc + b * D;
    float dot = 0.f;
    for (int64_t j = 0; j < len; ++j) {
      Vec acc = set1(0.f);
      const Vec wj = set1(w[j]);
      for (int64_t i = 0; i < D; i += 16) {
        const Vec g = load(dcb + i);
        acc = fmadd(g, load(mb + j * D + i), acc);
        float* dmj = dm + (b * S + j) * D + i;
        store(dmj, fmadd(wj, g, load(dmj)));
      }
      ds[j] = reduce_add(acc) + dw[b * S + j];  // the gradient of weight j
      dot += w[j] * ds[j];
    }
    for (int64_t j = 0; j < len; ++j) ds[j] = w[j] * (ds[j] - dot);  // softmax backward
    const float* kb = keys + b * S * A;
    float* dkb = dk + b * S * A;
    for (int64_t a = 0; a < A; a += 16) {
      const Vec qa = load(q + b * A + a), va = load(v + a);
      Vec dqa = set1(0.f), dva = set1(0.f);
      for (int64_t j = 0; j < len; ++j) {
        const Vec u = tanh16(add(load(kb + j * A + a), qa));
        const Vec s = set1(ds[j]);
        const Vec g = mul(mul(s, va), fnmadd(u, u, one));
        store(dkb + j * A + a, add(load(dkb + j * A + a), g));
        dqa = add(dqa, g);
        dva = fmadd(s, u, dva);
      }
      store(dq + b * A + a, dqa);
      store(dv + a, add(load(dv + a), dva));
    }
  }
}

// The weights' gradients, one set per thread: the first thread's are the
// outputs, the second's a scratch buffer added to them at the end.
enum Grad { kIe, kBi0, kIc, kK, kBk, kQ, kV, kH, kBh, kI, kBi, kGrads };

int64_t grad_size(const Dims& d, int g) {
  const int64_t sizes[kGrads] = {d.E * d.G, d.G, d.D * d.G, d.D * d.A, d.A, d.H * d.A, d.A,
                                 d.L * d.H * d.G, d.L * d.G, (d.L - 1) * d.H * d.G,
                                 (d.L - 1) * d.G};
  return sizes[g];
}

ffi::Error Backward(ffi::ThreadPool pool, F32 e, F32 memory, S32 src_len, F32 h0, F32 w_ie,
                    F32 w_ic, F32 w_k, F32 w_q, F32 v, F32 w_h, F32 w_i, F32 masks, F32 keys,
                    F32 contexts, F32 weights, F32 carries, F32 hps, F32 xps, F32 qs,
                    F32 d_tops, F32 d_contexts, F32 d_weights, Out d_e, Out d_memory, Out d_h0,
                    Out d_w_ie, Out d_b_i0, Out d_w_ic, Out d_w_k, Out d_b_k, Out d_w_q, Out d_v,
                    Out d_w_h, Out d_b_h, Out d_w_i, Out d_b_i) {
  const Dims d = dims_of(e, memory, w_k, h0);
  if (auto err = check(d); err.failure()) return err;
  const int64_t T = d.T, B = d.B, E = d.E, H = d.H, G = d.G, S = d.S, A = d.A, D = d.D, L = d.L;
  Packed wT(d);
  // Per row: the carries' gradients (two sets that swap each step), and one
  // step's pre-activation, context and query gradients and `keep`; the keys'.
  std::vector<float> dh_a(L * B * H), dh_b(L * B * H), dhp(B * G), dxp(B * G), dc(B * D),
      dq(B * A), keep(B * H), dropped(B * H), dinput(B * H), dk(B * S * A);
  int64_t total = 0;
  for (int g = 0; g < kGrads; ++g) total += grad_size(d, g);
  std::vector<float> other(total);
  Out* outs[kGrads] = {&d_w_ie, &d_b_i0, &d_w_ic, &d_w_k, &d_b_k, &d_w_q, &d_v,
                       &d_w_h, &d_b_h, &d_w_i, &d_b_i};
  for (int64_t p = 0; p < leading(e.dimensions(), 3); ++p) {
    wT.pack(d, p, true, w_ie, w_ic, w_k, w_q, w_h, w_i);
    const Problem pr(d, p, e, memory, src_len, h0, v, masks, carries.typed_data());
    const float* k_p = keys.typed_data() + p * B * S * A;
    const float* ctx_p = contexts.typed_data() + p * T * B * D;
    const float* w_p = weights.typed_data() + p * T * B * S;
    const float* hps_p = hps.typed_data() + p * T * L * B * G;
    const float* xps_p = xps.typed_data() + p * T * L * B * G;
    const float* qs_p = qs.typed_data() + p * T * B * A;
    const float* dtop_p = d_tops.typed_data() + p * T * B * H;
    const float* dctx_p = d_contexts.typed_data() + p * T * B * D;
    const float* dw_p = d_weights.typed_data() + p * T * B * S;
    float* de_p = d_e->typed_data() + p * B * T * E;
    float* dm_p = d_memory->typed_data() + p * B * S * D;
    float* mine[kGrads];
    float* theirs[kGrads];
    for (int g = 0, offset = 0; g < kGrads; offset += grad_size(d, g), ++g) {
      mine[g] = (*outs[g])->typed_data() + p * grad_size(d, g);
      theirs[g] = other.data() + offset;
      std::fill(mine[g], mine[g] + grad_size(d, g), 0.f);
    }
    std::fill(other.begin(), other.end(), 0.f);
    std::fill(dk.begin(), dk.end(), 0.f);
    std::fill(dm_p, dm_p + B * S * D, 0.f);
    std::fill(dh_a.begin(), dh_a.end(), 0.f);
    on_two_threads(pool, B, [&](int64_t b0, int64_t b1) {
      const int64_t rows = b1 - b0;
      float** g = b0 == 0 ? mine : theirs;
      float* cur = dh_a.data();  // the gradients of the carries after step t
      float* nxt = dh_b.data();  // ... and after step t - 1
      for (int64_t t = T - 1; t >= 0; --t) {
        float* top = cur + (L - 1) * B * H;
        for (int64_t i = b0 * H; i < b1 * H; ++i) top[i] += dtop_p[t * B * H + i];
        for (int64_t l = L - 1; l >= 0; --l) {
          const float* x = xps_p + (t * L + l) * B * G;
          const float* prev = pr.carry(t - 1, l);
          float* dn = nxt + l * B * H;
          gru_gates_backward(cur + l * B * H, prev, {x, x + H, x + 2 * H, G},
                             hps_p + (t * L + l) * B * G, dhp.data(), dxp.data() + 2 * H,
                             G, keep.data(), b0, b1, H);
          for (int64_t b = b0; b < b1; ++b)  // dxp = [da_r, da_z, da_n]
            std::memcpy(dxp.data() + b * G, dhp.data() + b * G, 2 * H * 4);
          std::memcpy(dn + b0 * H, keep.data() + b0 * H, rows * H * 4);
          gemm_packed<true>(dhp.data(), wT.h.data() + l * G * H, nullptr, dn, b0, b1, G, H);
          add_outer(prev + b0 * H, dhp.data() + b0 * G, rows, g[kH] + l * H * G,
                    g[kBh] + l * G, H, G);
          if (l > 0) {
            const float* in = layer_input(pr.carry(t, l - 1), pr.masks, t, l, d, dropped.data(), b0, b1);
            add_outer(in + b0 * H, dxp.data() + b0 * G, rows, g[kI] + (l - 1) * H * G,
                      g[kBi] + (l - 1) * G, H, G);
            float* below = cur + (l - 1) * B * H;  // the gradient of the layer below's carry
            if (!pr.masks) {
              gemm_packed<true>(dxp.data(), wT.i.data() + (l - 1) * G * H, nullptr, below, b0,
                                b1, G, H);
            } else {
              gemm_packed(dxp.data(), wT.i.data() + (l - 1) * G * H, nullptr, dinput.data(), b0,
                          b1, G, H);
              const float* m = pr.masks + (t * (L - 1) + l - 1) * B * H;
              for (int64_t i = b0 * H; i < b1 * H; ++i) below[i] += dinput[i] * m[i];
            }
          } else {  // layer 0: the embeddings', the context's and b_i's gradients
            add_outer(pr.e + b0 * T * E + t * E, dxp.data() + b0 * G, rows, g[kIe], g[kBi0], E, G,
                      T * E);
            gemm_packed(dxp.data(), wT.ie.data(), nullptr, de_p + t * E, b0, b1, G, E, -1, T * E);
            std::memcpy(dc.data() + b0 * D, dctx_p + (t * B + b0) * D, rows * D * 4);
            gemm_packed<true>(dxp.data(), wT.ic.data(), nullptr, dc.data(), b0, b1, G, D);
            add_outer(ctx_p + (t * B + b0) * D, dxp.data() + b0 * G, rows, g[kIc], nullptr, D, G);
          }
        }
        attend_rows_backward(d, k_p, pr.memory, pr.len, pr.v, qs_p + t * B * A, w_p + t * B * S,
                             dc.data(), dw_p + t * B * S, dm_p, dk.data(), g[kV], dq.data(), b0,
                             b1);
        add_outer(pr.carry(t - 1, L - 1) + b0 * H, dq.data() + b0 * A, rows, g[kQ], nullptr, H, A);
        gemm_packed<true>(dq.data(), wT.q.data(), nullptr, nxt + (L - 1) * B * H, b0, b1, A, H);
        std::swap(cur, nxt);
      }
      // The keys' projection: k = m w_k + b_k over these rows' memory.
      add_outer(pr.memory + b0 * S * D, dk.data() + b0 * S * A, rows * S, g[kK], g[kBk], D, A);
      gemm_packed<true>(dk.data(), wT.k.data(), nullptr, dm_p, b0 * S, b1 * S, A, D);
    });
    const float* last = T % 2 == 1 ? dh_b.data() : dh_a.data();  // after T swaps
    std::memcpy(d_h0->typed_data() + p * L * B * H, last, L * B * H * 4);
    for (int g = 0; g < kGrads; ++g)
      for (int64_t i = 0; i < grad_size(d, g); ++i) mine[g][i] += theirs[g][i];
  }
  return ffi::Error::Success();
}

}  // namespace
}  // namespace cpu_kernels::SEQ2SEQ_ISA

#pragma GCC pop_options
#endif

#ifdef SEQ2SEQ_CPU_KERNELS
XLA_FFI_DEFINE_HANDLER_SYMBOL(SEQ2SEQ_ISA_SYMBOL(BahdanauDecoderForward),
                              cpu_kernels::SEQ2SEQ_ISA::Forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>()    // e: target embeddings [..., B, T, E]
                                  .Arg<F32>()    // memory [..., B, S, D]
                                  .Arg<S32>()    // src_len [..., B]
                                  .Arg<F32>()    // h0 [..., L, B, H]
                                  .Arg<F32>()    // w_ie [..., E, 3H]
                                  .Arg<F32>()    // b_i of layer 0 [..., 3H]
                                  .Arg<F32>()    // w_ic [..., D, 3H]
                                  .Arg<F32>()    // w_k [..., D, A]
                                  .Arg<F32>()    // b_k [..., A]
                                  .Arg<F32>()    // w_q [..., H, A]
                                  .Arg<F32>()    // v [..., A]
                                  .Arg<F32>()    // w_h [..., L, H, 3H]
                                  .Arg<F32>()    // b_h [..., L, 3H]
                                  .Arg<F32>()    // w_i of layers 1.. [..., L-1, H, 3H]
                                  .Arg<F32>()    // b_i of layers 1.. [..., L-1, 3H]
                                  .Arg<F32>()    // dropout masks [..., T, L-1, B, H], or empty
                                  .Ret<F32>()    // the top layer's state [..., T, B, H]
                                  .Ret<F32>()    // contexts [..., T, B, D]
                                  .Ret<F32>()    // attention weights [..., T, B, S]
                                  .Ret<F32>()    // keys [..., B, S, A]
                                  .Ret<F32>()    // every layer's carries [..., T, L, B, H]
                                  .Ret<F32>()    // h w_h + b_h [..., T, L, B, 3H]
                                  .Ret<F32>()    // the input pre-activations [..., T, L, B, 3H]
                                  .Ret<F32>());  // the queries [..., T, B, A]

XLA_FFI_DEFINE_HANDLER_SYMBOL(SEQ2SEQ_ISA_SYMBOL(BahdanauDecoderBackward),
                              cpu_kernels::SEQ2SEQ_ISA::Backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>()    // e
                                  .Arg<F32>()    // memory
                                  .Arg<S32>()    // src_len
                                  .Arg<F32>()    // h0
                                  .Arg<F32>()    // w_ie
                                  .Arg<F32>()    // w_ic
                                  .Arg<F32>()    // w_k
                                  .Arg<F32>()    // w_q
                                  .Arg<F32>()    // v
                                  .Arg<F32>()    // w_h
                                  .Arg<F32>()    // w_i
                                  .Arg<F32>()    // masks
                                  .Arg<F32>()    // keys (forward)
                                  .Arg<F32>()    // contexts (forward)
                                  .Arg<F32>()    // weights (forward)
                                  .Arg<F32>()    // carries (forward)
                                  .Arg<F32>()    // hps (forward)
                                  .Arg<F32>()    // xps (forward)
                                  .Arg<F32>()    // qs (forward)
                                  .Arg<F32>()    // the gradient of the top states
                                  .Arg<F32>()    // ... of the contexts
                                  .Arg<F32>()    // ... of the weights
                                  .Ret<F32>()    // d e
                                  .Ret<F32>()    // d memory
                                  .Ret<F32>()    // d h0
                                  .Ret<F32>()    // d w_ie
                                  .Ret<F32>()    // d b_i (layer 0)
                                  .Ret<F32>()    // d w_ic
                                  .Ret<F32>()    // d w_k
                                  .Ret<F32>()    // d b_k
                                  .Ret<F32>()    // d w_q
                                  .Ret<F32>()    // d v
                                  .Ret<F32>()    // d w_h
                                  .Ret<F32>()    // d b_h
                                  .Ret<F32>()    // d w_i
                                  .Ret<F32>());  // d b_i (layers 1..)
#endif
