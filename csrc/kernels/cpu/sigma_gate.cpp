// CPU implementation of pid::sigma_gate (see pid/sigma_gate.h). OpenMP over tokens.
#include "pid/sigma_gate.h"
#include "../sigma_gate_dtypes.h"
#include "load_store.h"

#include <algorithm>
#include <cmath>
#include <vector>

// PID_CPU_NS: this file is compiled once per instruction-set variant (CMakeLists.txt), each into its own
// namespace; the public functions in namespace pid (isa_select.cpp) call the variant chosen at run time.
namespace pid::PID_CPU_NS {
namespace {

constexpr std::int64_t kParallelMinWork = 1 << 15;  // elements; below this threads cost more than they save
constexpr std::int64_t kTokenBlock = 16;            // G == D: tokens that share one pass over w_x

inline float sigmoid(float z) { return 1.f / (1.f + std::exp(-z)); }

// Returns `src` as float32: itself if it is float32, else converted into `storage`.
inline const float* as_f32(const float* src, std::int64_t, std::vector<float>&) { return src; }
inline const float* as_f32(const bf16* src, std::int64_t n, std::vector<float>& storage) {
  storage.resize(static_cast<std::size_t>(n));
#pragma omp parallel for if (n >= kParallelMinWork)
  for (std::int64_t i = 0; i < n; ++i) storage[i] = ld(src + i);
  return storage.data();
}

// X: x's and out's type, P: that of lq, lq_logit and w_x (float32 / float32, bf16 / bf16, float32 / bf16).
template <typename X, typename P>
void per_token(const X* x, const P* lq, const P* lq_logit, const P* w_x, const float* alpha,
               X* out, SigmaGateSizes s) {
  const std::int64_t D = s.D, n_tok = s.B * s.L;
  std::vector<float> w_storage;
  const float* w = as_f32(w_x, D, w_storage);
#pragma omp parallel for schedule(static) if (n_tok * D >= kParallelMinWork)
  for (std::int64_t t = 0; t < n_tok; ++t) {
    const X* xt = x + t * D;
    const P* lt = lq + t * D;
    X* ot = out + t * D;
    float acc = 0.f;
#pragma omp simd reduction(+ : acc)
    for (std::int64_t k = 0; k < D; ++k) acc += ld(xt + k) * w[k];
    const float gate = sigmoid(acc + ld(lq_logit + t) - alpha[t / s.L]);
#pragma omp simd
    for (std::int64_t d = 0; d < D; ++d) st(ot + d, ld(xt + d) + gate * ld(lt + d));
  }
}

#if defined(__GNUC__)  // GCC and Clang: vector extensions, 16 float32 lanes (one AVX-512 or two AVX2 registers)
using Lanes = float __attribute__((vector_size(64)));

// By reference, not by value: passing a 64-byte vector by value changes the ABI without AVX-512 (-Wpsabi).
inline void load_lanes(Lanes& v, const float* p) { __builtin_memcpy(&v, p, sizeof v); }  // unaligned

// out[t * ld + c] = dot(x[t], w[c]) for NT token rows x and NC rows w (row length D): NT x NC accumulators of 16
// lanes in registers, each loaded x or w vector shared by NC or NT products.
template <int NT, int NC>
inline void dot_tile(const float* x, const float* w, std::int64_t D, float* out, std::int64_t ld) {
  Lanes acc[NT][NC];
  for (int t = 0; t < NT; ++t)
    for (int c = 0; c < NC; ++c) acc[t][c] = Lanes{};
  std::int64_t k0 = 0;
  for (; k0 + 16 <= D; k0 += 16) {
    Lanes wv[NC];
#pragma GCC unroll 8
    for (int c = 0; c < NC; ++c) load_lanes(wv[c], w + c * D + k0);
#pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) {
      Lanes xv;
      load_lanes(xv, x + t * D + k0);
#pragma GCC unroll 8
      for (int c = 0; c < NC; ++c) acc[t][c] += xv * wv[c];
    }
  }
  for (int t = 0; t < NT; ++t)
    for (int c = 0; c < NC; ++c) {
      float sum = 0.f;
      for (int l = 0; l < 16; ++l) sum += acc[t][c][l];
      for (std::int64_t k = k0; k < D; ++k) sum += x[t * D + k] * w[c * D + k];
      out[t * ld + c] = sum;
    }
}

// logits[i * D + g] = dot(xb[i], w[g]) for the n (<= kTokenBlock) float32 token rows in xb: tiles of 4 tokens x
// 6 channels (w's rows), then the tokens and channels left over.
void block_logits(const float* xb, std::int64_t n, const float* w, std::int64_t D, float* logits) {
  constexpr int kT = 4, kC = 6;
  const std::int64_t n_main = n / kT * kT, d_main = D / kC * kC;
  for (std::int64_t g = 0; g < d_main; g += kC) {
    for (std::int64_t i = 0; i < n_main; i += kT) dot_tile<kT, kC>(xb + i * D, w + g * D, D, logits + i * D + g, D);
    for (std::int64_t i = n_main; i < n; ++i) dot_tile<1, kC>(xb + i * D, w + g * D, D, logits + i * D + g, D);
  }
  for (std::int64_t g = d_main; g < D; ++g) {
    for (std::int64_t i = 0; i < n_main; i += kT) dot_tile<kT, 1>(xb + i * D, w + g * D, D, logits + i * D + g, D);
    for (std::int64_t i = n_main; i < n; ++i) dot_tile<1, 1>(xb + i * D, w + g * D, D, logits + i * D + g, D);
  }
}
#else
// logits[i * D + g] = dot(xb[i], w[g]) for the n (<= kTokenBlock) float32 token rows in xb.
void block_logits(const float* xb, std::int64_t n, const float* w, std::int64_t D, float* logits) {
  for (std::int64_t g = 0; g < D; ++g)
    for (std::int64_t i = 0; i < n; ++i) {
      const float* xi = xb + i * D;
      const float* wg = w + g * D;
      float a = 0.f;
#pragma omp simd reduction(+ : a)
      for (std::int64_t k = 0; k < D; ++k) a += xi[k] * wg[k];
      logits[i * D + g] = a;
    }
}
#endif

template <typename X, typename P>
void per_dim(const X* x, const P* lq, const P* lq_logit, const P* w_x, const float* alpha, X* out,
             SigmaGateSizes s) {
  const std::int64_t D = s.D, n_tok = s.B * s.L;
  const std::int64_t n_blocks = (n_tok + kTokenBlock - 1) / kTokenBlock;
  std::vector<float> w_storage;
  const float* w = as_f32(w_x, D * D, w_storage);
#pragma omp parallel if (n_tok * D >= kParallelMinWork)
  {
    std::vector<float> xb(static_cast<std::size_t>(kTokenBlock * D));
    std::vector<float> logits(static_cast<std::size_t>(kTokenBlock * D));
#pragma omp for schedule(static)
    for (std::int64_t blk = 0; blk < n_blocks; ++blk) {
      const std::int64_t t0 = blk * kTokenBlock, n = std::min(kTokenBlock, n_tok - t0);
      const X* xs = x + t0 * D;
#pragma omp simd
      for (std::int64_t j = 0; j < n * D; ++j) xb[j] = ld(xs + j);
      block_logits(xb.data(), n, w, D, logits.data());
      for (std::int64_t i = 0; i < n; ++i) {
        const std::int64_t t = t0 + i;
        const float a = alpha[t / s.L];
        const float* xi = xb.data() + i * D;
        const float* zi = logits.data() + i * D;
        const P* li = lq_logit + t * D;
        const P* qi = lq + t * D;
        X* oi = out + t * D;
        for (std::int64_t d = 0; d < D; ++d)
          st(oi + d, xi[d] + sigmoid(zi[d] + ld(li + d) - a) * ld(qi + d));
      }
    }
  }
}

template <typename X, typename P>
void sigma_gate_impl(const X* x, const P* lq, const P* lq_logit, const P* w_x, const float* alpha,
                     X* out, SigmaGateSizes s) {
  if (s.B * s.L == 0 || s.D == 0) return;
  if (s.G == 1)
    per_token(x, lq, lq_logit, w_x, alpha, out, s);
  else
    per_dim(x, lq, lq_logit, w_x, alpha, out, s);
}

// The epilogue alone (sigma_gate_apply): one pass, OpenMP over tokens. T: x's and out's type, Q: lq's.
template <typename T, typename Q, typename Z>
void apply_impl(const T* x, const Q* lq, const Z* logit, const float* alpha, T* out, SigmaGateSizes s) {
  const std::int64_t D = s.D, G = s.G, n_tok = s.B * s.L;
  if (n_tok == 0 || D == 0) return;
#pragma omp parallel for schedule(static) if (n_tok * D >= kParallelMinWork)
  for (std::int64_t t = 0; t < n_tok; ++t) {
    const float a = alpha[t / s.L];
    const T* xt = x + t * D;
    const Q* qt = lq + t * D;
    const Z* zt = logit + t * G;
    T* ot = out + t * D;
    if (G == 1) {
      const float gate = sigmoid(ld(zt) - a);
#pragma omp simd
      for (std::int64_t d = 0; d < D; ++d) st(ot + d, ld(xt + d) + gate * ld(qt + d));
    } else {
#pragma omp simd
      for (std::int64_t d = 0; d < D; ++d)
        st(ot + d, ld(xt + d) + sigmoid(ld(zt + d) - a) * ld(qt + d));
    }
  }
}

}  // namespace

void sigma_gate_apply_cpu(const SigmaGateApplyParams& p) {
  with_sigma_gate_apply_dtypes<bf16>("pid::sigma_gate_apply_cpu", p, [&](auto x, auto lq, auto logit) {
    using T = decltype(x);
    apply_impl(static_cast<const T*>(p.x), static_cast<const decltype(lq)*>(p.lq),
               static_cast<const decltype(logit)*>(p.logit), p.alpha_sigma, static_cast<T*>(p.out), p.sizes);
  });
}

void sigma_gate_cpu(const SigmaGateParams& p) {
  with_sigma_gate_dtypes<bf16>("pid::sigma_gate_cpu", p, [&](auto x, auto lq) {
    using X = decltype(x);
    using P = decltype(lq);
    sigma_gate_impl(static_cast<const X*>(p.x), static_cast<const P*>(p.lq), static_cast<const P*>(p.lq_logit),
                    static_cast<const P*>(p.w_x), p.alpha_sigma, static_cast<X*>(p.out), p.sizes);
  });
}

}  // namespace pid::PID_CPU_NS
