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
// Row b runs its first tgt_len[b] steps; its outputs after them are zero and
// cost nothing (the model zeroes them on every path when the train step
// passes the lengths: RNNSeq2Seq.__call__'s tgt_len).
// The forward pass also keeps the keys, every layer's carries, both
// pre-activations and q for the backward pass, which recomputes tanh(k + q).
//
// As in gru_layer.cc, the batch's rows run on two threads with no
// synchronisation between steps (nothing mixes rows), each thread's rows
// sorted by length (Order, kernels.h) so that a step's matmuls take only
// the rows still running, inputs and outputs are in the model's batch-major
// layout, and the weights' gradients are added up as the backward pass goes
// (per thread, summed at the end). Leading
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

// The attention of slots s0:s1 at one step: weights a [B, S] and context
// c [B, D] (slot order) from the queries q [B, A] (slot order) and the
// keys [B, S, A], memory and source lengths (row order).
void attend(const Dims& d, const Order& order, const float* keys, const float* memory,
            const int32_t* src_len, const float* v, const float* q, float* weights,
            float* context, int64_t s0, int64_t s1) {
  const int64_t S = d.S, A = d.A, D = d.D;
  std::vector<float> sc(S);
  for (int64_t b = s0; b < s1; ++b) {
    const int64_t row = order.row[b], len = std::clamp<int64_t>(src_len[row], 0, S);
    const float* kb = keys + row * S * A;
    const float* qb = q + b * A;
    float* w = weights + b * S;
    float top = -INFINITY;
    for (int64_t j = 0; j < len; ++j) {
      Vec acc = set1(0.f);
      for (int64_t a = 0; a < A; a += 16)
        acc = fmadd(tanh16(add(load(kb + j * A + a), load(qb + a))), load(v + a), acc);
      sc[j] = reduce_add(acc);
      top = std::max(top, sc[j]);
    }
    float sum = 0.f;
    for (int64_t j = 0; j < len; ++j) sum += (sc[j] = std::exp(sc[j] - top));
    for (int64_t j = 0; j < S; ++j) w[j] = j < len ? sc[j] / sum : 0.f;
    const float* mb = memory + row * S * D;
    for (int64_t i = 0; i < D; i += 16) {
      Vec acc = set1(0.f);
      for (int64_t j = 0; j < len; ++j)
        acc = fmadd(set1(w[j]), load(mb + j * D + i), acc);
      store(context + b * D + i, acc);
    }
  }
}

// What both passes read of problem p of the stack, the order of its slots
// (by target length), and every layer's carries (slot order).
struct Problem {
  const Dims& d;
  const float *e, *memory, *h0, *v, *masks, *carries;  // masks: null without dropout
  const int32_t* src_len;
  Order order;
  std::vector<float> h0s;  // h0 in slot order [L, B, H]
  Problem(const Dims& d, int64_t p, int64_t split, F32& e_, F32& memory_, S32& src_len_,
          S32& tgt_len, F32& h0_, F32& v_, F32& masks_, const float* all_carries)
      : d(d),
        e(e_.typed_data() + p * d.B * d.T * d.E),
        memory(memory_.typed_data() + p * d.B * d.S * d.D),
        h0(h0_.typed_data() + p * d.L * d.B * d.H),
        v(v_.typed_data() + p * d.A),
        masks(masks_.element_count() > 0
                  ? masks_.typed_data() + p * d.T * (d.L - 1) * d.B * d.H : nullptr),
        carries(all_carries + p * d.T * d.L * d.B * d.H),
        src_len(src_len_.typed_data() + p * d.B),
        order(tgt_len.typed_data() + p * d.B, d.B, d.T, split),
        h0s(d.L * d.B * d.H) {
    for (int64_t l = 0; l < d.L; ++l)
      order.to_slots(h0 + l * d.B * d.H, h0s.data() + l * d.B * d.H, d.H);
  }
  // Layer l's carry after step t (t = -1: h0), slot order.
  const float* carry(int64_t t, int64_t l) const {
    return t < 0 ? h0s.data() + l * d.B * d.H : carries + (t * d.L + l) * d.B * d.H;
  }
  // Layer l's input at step t for slots s0:s1 (l > 0): the layer below's new
  // carry, times its dropout mask if there is one (then written to `scratch`).
  const float* layer_input(int64_t t, int64_t l, float* scratch, int64_t s0, int64_t s1) const {
    const float* below = carry(t, l - 1);
    if (!masks) return below;
    const float* m = masks + (t * (d.L - 1) + l - 1) * d.B * d.H;
    for (int64_t b = s0; b < s1; ++b) {
      const float* mb = m + order.row[b] * d.H;
      for (int64_t i = 0; i < d.H; ++i) scratch[b * d.H + i] = below[b * d.H + i] * mb[i];
    }
    return scratch;
  }
  // The target embeddings of step t for slots s0:s1, into `out` [B, E].
  void embeddings(int64_t t, float* out, int64_t s0, int64_t s1) const {
    for (int64_t b = s0; b < s1; ++b)
      std::memcpy(out + b * d.E, e + (order.row[b] * d.T + t) * d.E, d.E * 4);
  }
};

// Row `row`'s `n` floats of step t in an output [T, B, n]: zero for steps
// after the row's target length, which are not computed.
inline void put(float* out, int64_t t, int64_t B, int64_t row, int64_t n, const float* from) {
  float* o = out + (t * B + row) * n;
  if (from) std::memcpy(o, from, n * 4);
  else std::fill(o, o + n, 0.f);
}

// The forward pass keeps the carries, pre-activations and queries in slot
// order (the backward pass's residuals); the outputs (the top states,
// contexts and weights, of which the last two are residuals too) are in row
// order.
ffi::Error Forward(ffi::ThreadPool pool, F32 e, F32 memory, S32 src_len, S32 tgt_len, F32 h0,
                   F32 w_ie, F32 b_i0, F32 w_ic, F32 w_k, F32 b_k, F32 w_q, F32 v, F32 w_h,
                   F32 b_h, F32 w_i, F32 b_i, F32 masks, Out tops, Out contexts, Out weights,
                   Out keys, Out carries, Out hps, Out xps, Out qs) {
  const Dims d = dims_of(e, memory, w_k, h0);
  if (auto err = check(d); err.failure()) return err;
  const int64_t T = d.T, B = d.B, E = d.E, H = d.H, G = d.G, S = d.S, A = d.A, D = d.D, L = d.L;
  const int64_t split = two_thread_split(pool, B);
  Packed w(d);
  std::vector<float> dropped(B * H), e_t(B * E), ctx(B * D), att(B * S);
  for (int64_t p = 0; p < leading(e.dimensions(), 3); ++p) {
    w.pack(d, p, false, w_ie, w_ic, w_k, w_q, w_h, w_i);
    const Problem pr(d, p, split, e, memory, src_len, tgt_len, h0, v, masks,
                     carries->typed_data());
    const Order& order = pr.order;
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
    on_two_threads(pool, B, [&](int64_t b0, int64_t b1) {  // the keys, rows b0:b1
      gemm_packed(pr.memory, w.k.data(), bk_p, k_p, b0 * S, b1 * S, D, A);
    });
    on_two_threads(pool, B, [&](int64_t s0, int64_t s1) {
      for (int64_t t = 0; t < T; ++t) {
        const int64_t run = order.running_end(s0, s1, t);
        if (run > s0) {
          float* q = qs_p + t * B * A;
          gemm_packed(pr.carry(t - 1, L - 1), w.q.data(), nullptr, q, s0, run, H, A);
          attend(d, order, k_p, pr.memory, pr.src_len, pr.v, q, att.data(), ctx.data(), s0, run);
          pr.embeddings(t, e_t.data(), s0, run);
        }
        for (int64_t l = 0; l < L && run > s0; ++l) {
          float* x = xps_p + (t * L + l) * B * G;
          float* hp = hps_p + (t * L + l) * B * G;
          if (l == 0) {  // e_t w_ie + b_i + c w_ic
            gemm_packed(e_t.data(), w.ie.data(), bi0_p, x, s0, run, E, G);
            gemm_packed<true>(ctx.data(), w.ic.data(), nullptr, x, s0, run, D, G);
          } else {
            const float* in = pr.layer_input(t, l, dropped.data(), s0, run);
            gemm_packed(in, w.i.data() + (l - 1) * H * G, bi_p + (l - 1) * G, x, s0, run, H, G);
          }
          gemm_packed(pr.carry(t - 1, l), w.h.data() + l * H * G, bh_p + l * G, hp, s0, run, H, G);
          gru_gates({x, x + H, x + 2 * H, G}, hp, pr.carry(t - 1, l),
                    car_p + (t * L + l) * B * H, s0, run, H);
        }
        for (int64_t b = s0; b < s1; ++b) {
          const int64_t row = order.row[b];
          const bool on = b < run;
          put(tops_p, t, B, row, H, on ? pr.carry(t, L - 1) + b * H : nullptr);
          put(ctx_p, t, B, row, D, on ? ctx.data() + b * D : nullptr);
          put(w_p, t, B, row, S, on ? att.data() + b * S : nullptr);
        }
      }
    });
  }
  return ffi::Error::Success();
}

// The attention's backward pass for slots s0:s1 at one step: from the
// context's gradient dc [B, D] and the weights' gradient dw [B, S] (slot
// order), adds to the memory's gradient (dm [B, S, D], row order), the
// keys' (dk [B, S, A], row order) and dv [A], and writes the query's
// gradient dq [B, A]. weights: the forward pass's [B, S], row order.
void attend_backward(const Dims& d, const Order& order, const float* keys, const float* memory,
                     const int32_t* src_len, const float* v, const float* q,
                     const float* weights, const float* dc, const float* dw, float* dm,
                     float* dk, float* dv, float* dq, int64_t s0, int64_t s1) {
  const int64_t S = d.S, A = d.A, D = d.D;
  std::vector<float> ds(S);
  const Vec one = set1(1.f);
  for (int64_t b = s0; b < s1; ++b) {
    const int64_t row = order.row[b], len = std::clamp<int64_t>(src_len[row], 0, S);
    const float* w = weights + row * S;
    const float* mb = memory + row * S * D;
    const float* dcb = dc + b * D;
    float dot = 0.f;
    for (int64_t j = 0; j < len; ++j) {
      Vec acc = set1(0.f);
      const Vec wj = set1(w[j]);
      for (int64_t i = 0; i < D; i += 16) {
        const Vec g = load(dcb + i);
        acc = fmadd(g, load(mb + j * D + i), acc);
        float* dmj = dm + (row * S + j) * D + i;
        store(dmj, fmadd(wj, g, load(dmj)));
      }
      ds[j] = reduce_add(acc) + dw[b * S + j];  // the gradient of weight j
      dot += w[j] * ds[j];
    }
    for (int64_t j = 0; j < len; ++j) ds[j] = w[j] * (ds[j] - dot);  // softmax backward
    const float* kb = keys + row * S * A;
    float* dkb = dk + row * S * A;
    for (int64_t a = 0; a < A; a += 16) {
      const Vec qa = load(q + b * A + a), va = load(v + a);
      Vec dqa = set1(0.f), dva = set1(0.f);
      for (int64_t j = 0; j < len; ++j) {
        const Vec u = tanh16(add(load(kb + j * A + a), qa));
        const Vec sj = set1(ds[j]);
        const Vec g = mul(mul(sj, va), fnmadd(u, u, one));
        store(dkb + j * A + a, add(load(dkb + j * A + a), g));
        dqa = add(dqa, g);
        dva = fmadd(sj, u, dva);
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

// The gradients arriving for steps after a row's target length are not
// used: the model zeroes its outputs there (RNNSeq2Seq.__call__ with
// tgt_len), so they are zero.
ffi::Error Backward(ffi::ThreadPool pool, F32 e, F32 memory, S32 src_len, S32 tgt_len, F32 h0,
                    F32 w_ie, F32 w_ic, F32 w_k, F32 w_q, F32 v, F32 w_h, F32 w_i, F32 masks,
                    F32 keys, F32 contexts, F32 weights, F32 carries, F32 hps, F32 xps, F32 qs,
                    F32 d_tops, F32 d_contexts, F32 d_weights, Out d_e, Out d_memory, Out d_h0,
                    Out d_w_ie, Out d_b_i0, Out d_w_ic, Out d_w_k, Out d_b_k, Out d_w_q, Out d_v,
                    Out d_w_h, Out d_b_h, Out d_w_i, Out d_b_i) {
  const Dims d = dims_of(e, memory, w_k, h0);
  if (auto err = check(d); err.failure()) return err;
  const int64_t T = d.T, B = d.B, E = d.E, H = d.H, G = d.G, S = d.S, A = d.A, D = d.D, L = d.L;
  const int64_t split = two_thread_split(pool, B);
  Packed wT(d);
  // Per slot: the carries' gradients (two sets that swap each step), and one
  // step's pre-activation, context and query gradients, `keep`, the step's
  // embeddings, contexts and weights' gradient; the keys' gradient.
  std::vector<float> dh_a(L * B * H), dh_b(L * B * H), dhp(B * G), dxp(B * G), dc(B * D),
      dq(B * A), keep(B * H), dropped(B * H), dinput(B * H), dk(B * S * A), e_t(B * E),
      ctx(B * D), dwt(B * S), de_t(B * E), dh0(L * B * H);
  int64_t total = 0;
  for (int g = 0; g < kGrads; ++g) total += grad_size(d, g);
  std::vector<float> other(total);
  Out* outs[kGrads] = {&d_w_ie, &d_b_i0, &d_w_ic, &d_w_k, &d_b_k, &d_w_q, &d_v,
                       &d_w_h, &d_b_h, &d_w_i, &d_b_i};
  for (int64_t p = 0; p < leading(e.dimensions(), 3); ++p) {
    wT.pack(d, p, true, w_ie, w_ic, w_k, w_q, w_h, w_i);
    const Problem pr(d, p, split, e, memory, src_len, tgt_len, h0, v, masks,
                     carries.typed_data());
    const Order& order = pr.order;
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
    std::fill(de_p, de_p + B * T * E, 0.f);  // steps after a row's length keep zeros
    // A slot's carries' gradients are zero until its last step (going back).
    std::fill(dh_a.begin(), dh_a.end(), 0.f);
    std::fill(dh_b.begin(), dh_b.end(), 0.f);
    on_two_threads(pool, B, [&](int64_t s0, int64_t s1) {
      float** g = s0 == 0 ? mine : theirs;
      float* cur = dh_a.data();  // the gradients of the carries after step t
      float* nxt = dh_b.data();  // ... and after step t - 1
      for (int64_t t = T - 1; t >= 0; --t) {
        const int64_t run = order.running_end(s0, s1, t), n = run - s0;
        if (n == 0) continue;  // no slot of this share has reached its last step yet
        float* top = cur + (L - 1) * B * H;
        for (int64_t b = s0; b < run; ++b) {
          const int64_t row = order.row[b];
          const float* dt = dtop_p + (t * B + row) * H;
          for (int64_t i = 0; i < H; ++i) top[b * H + i] += dt[i];
          std::memcpy(dc.data() + b * D, dctx_p + (t * B + row) * D, D * 4);
          std::memcpy(ctx.data() + b * D, ctx_p + (t * B + row) * D, D * 4);
          std::memcpy(dwt.data() + b * S, dw_p + (t * B + row) * S, S * 4);
        }
        for (int64_t l = L - 1; l >= 0; --l) {
          const float* x = xps_p + (t * L + l) * B * G;
          const float* prev = pr.carry(t - 1, l);
          float* dn = nxt + l * B * H;
          gru_gates_backward(cur + l * B * H, prev, {x, x + H, x + 2 * H, G},
                             hps_p + (t * L + l) * B * G, dhp.data(), dxp.data() + 2 * H,
                             G, keep.data(), s0, run, H);
          for (int64_t b = s0; b < run; ++b)  // dxp = [da_r, da_z, da_n]
            std::memcpy(dxp.data() + b * G, dhp.data() + b * G, 2 * H * 4);
          std::memcpy(dn + s0 * H, keep.data() + s0 * H, n * H * 4);
          gemm_packed<true>(dhp.data(), wT.h.data() + l * G * H, nullptr, dn, s0, run, G, H);
          add_outer(prev + s0 * H, dhp.data() + s0 * G, n, g[kH] + l * H * G,
                    g[kBh] + l * G, H, G);
          if (l > 0) {
            const float* in = pr.layer_input(t, l, dropped.data(), s0, run);
            add_outer(in + s0 * H, dxp.data() + s0 * G, n, g[kI] + (l - 1) * H * G,
                      g[kBi] + (l - 1) * G, H, G);
            float* below = cur + (l - 1) * B * H;  // the gradient of the layer below's carry
            if (!pr.masks) {
              gemm_packed<true>(dxp.data(), wT.i.data() + (l - 1) * G * H, nullptr, below, s0,
                                run, G, H);
            } else {
              gemm_packed(dxp.data(), wT.i.data() + (l - 1) * G * H, nullptr, dinput.data(), s0,
                          run, G, H);
              const float* m = pr.masks + (t * (L - 1) + l - 1) * B * H;
              for (int64_t b = s0; b < run; ++b) {
                const float* mb = m + order.row[b] * H;
                for (int64_t i = 0; i < H; ++i) below[b * H + i] += dinput[b * H + i] * mb[i];
              }
            }
          } else {  // layer 0: the embeddings', the context's and b_i's gradients
            pr.embeddings(t, e_t.data(), s0, run);
            add_outer(e_t.data() + s0 * E, dxp.data() + s0 * G, n, g[kIe], g[kBi0], E, G);
            gemm_packed(dxp.data(), wT.ie.data(), nullptr, de_t.data(), s0, run, G, E);
            for (int64_t b = s0; b < run; ++b)
              std::memcpy(de_p + (order.row[b] * T + t) * E, de_t.data() + b * E, E * 4);
            gemm_packed<true>(dxp.data(), wT.ic.data(), nullptr, dc.data(), s0, run, G, D);
            add_outer(ctx.data() + s0 * D, dxp.data() + s0 * G, n, g[kIc], nullptr, D, G);
          }
        }
        attend_backward(d, order, k_p, pr.memory, pr.src_len, pr.v, qs_p + t * B * A,
                        w_p + t * B * S, dc.data(), dwt.data(), dm_p, dk.data(), g[kV],
                        dq.data(), s0, run);
        add_outer(pr.carry(t - 1, L - 1) + s0 * H, dq.data() + s0 * A, n, g[kQ], nullptr, H, A);
        gemm_packed<true>(dq.data(), wT.q.data(), nullptr, nxt + (L - 1) * B * H, s0, run, A, H);
        // The next step overwrites every row of nxt it reads; a slot that
        // starts there (its last step) finds zeros in both buffers.
        std::swap(cur, nxt);
      }
      // h0's gradient: what reached step 0 (cur, after the last swap).
      for (int64_t l = 0; l < L; ++l)
        std::memcpy(dh0.data() + (l * B + s0) * H, cur + (l * B + s0) * H, (s1 - s0) * H * 4);
    });
    on_two_threads(pool, B, [&](int64_t b0, int64_t b1) {  // the keys' projection, rows b0:b1
      float** g = b0 == 0 ? mine : theirs;
      add_outer(pr.memory + b0 * S * D, dk.data() + b0 * S * A, (b1 - b0) * S, g[kK], g[kBk],
                D, A);
      gemm_packed<true>(dk.data(), wT.k.data(), nullptr, dm_p, b0 * S, b1 * S, A, D);
    });
    for (int64_t l = 0; l < L; ++l)
      order.to_rows(dh0.data() + l * B * H, d_h0->typed_data() + (p * L + l) * B * H, H);
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
                                  .Arg<S32>()    // tgt_len [..., B]: the steps each row runs
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
                                  .Arg<S32>()    // tgt_len
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
