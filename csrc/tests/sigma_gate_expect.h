// The sigma gate's expected values and error bound, shared by the CPU kernel's test (test_sigma_gate.cpp) and the
// emulated CUDA tensor-core kernel's (test_sigma_gate_mma_emulated.cpp): a naive double-precision loop, and per
// element the bound of float32 math: the logit may be off by gamma(D+2) * (sum|x*w| + |lq_logit| + alpha),
// sigmoid' <= 1/4 carries that to the output times |lq|, plus a few float32 roundings of the epilogue and, for
// bfloat16 output, half an ulp of the result.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "pid/sigma_gate.h"

#include "expect_unsupported.h"

namespace pid_test {

constexpr double kU32 = 0x1p-24;   // unit roundoff of float32
constexpr double kUBf16 = 0x1p-8;  // unit roundoff of bfloat16

inline double to_double(float v) { return v; }
inline double to_double(pid::bf16 v) { return pid::bf16_to_float(v); }
template <typename T> T make(float v);
template <> inline float make<float>(float v) { return v; }
template <> inline pid::bf16 make<pid::bf16>(float v) { return pid::float_to_bf16(v); }

// Runs `gate(params)` on random inputs, the params pointing at host arrays (a GPU run copies them), and counts the
// elements outside the bound. X: x's and out's type, P: that of lq, lq_logit and w_x (float / float, bf16 / bf16,
// float / bf16).
// offset: elements every array starts past its allocation (0: 16-byte aligned, as malloc gives; else unaligned).
template <typename X, typename P = X, typename Gate>
int check_gate(std::int64_t B, std::int64_t L, std::int64_t D, std::int64_t G, unsigned seed, Gate gate,
               std::int64_t offset = 0) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> uniform(0.f, 8.f);
  auto fill = [&]<typename T>(std::int64_t n, T) {
    std::vector<T> v(static_cast<std::size_t>(n + offset));
    for (auto& e : v) e = make<T>(normal(rng));
    return v;
  };
  const std::int64_t N = B * L * D;
  const auto x = fill(N, X{}), lq = fill(N, P{}), lql = fill(B * L * G, P{}), w = fill(G * D, P{});
  const double w_scale = 1.0 / std::sqrt(double(D));  // keep logits O(1) so the gate is not saturated
  std::vector<P> ws(w.size());
  for (std::size_t i = 0; i < w.size(); ++i) ws[i] = make<P>(float(to_double(w[i]) * w_scale));
  std::vector<float> alpha(static_cast<std::size_t>(B));
  for (auto& a : alpha) a = uniform(rng);
  std::vector<X> out_storage(static_cast<std::size_t>(N + offset));
  const X *xp = x.data() + offset;
  const P *qp = lq.data() + offset, *lp = lql.data() + offset, *wp = ws.data() + offset;
  X* out = out_storage.data() + offset;
  gate(pid::SigmaGateParams{pid::SigmaGateSizes{B, L, D, G}, xp, qp, lp, wp, alpha.data(), out, pid::dtype_of<X>(),
                            pid::dtype_of<P>()});

  const double u_out = sizeof(X) == 2 ? kUBf16 : kU32;
  const double gamma = (D + 2) * kU32 / (1 - (D + 2) * kU32);
  int bad = 0;
  for (std::int64_t t = 0; t < B * L; ++t) {
    const std::int64_t b = t / L;
    for (std::int64_t d = 0; d < D; ++d) {
      const std::int64_t g = G == 1 ? 0 : d;
      double dot = 0, mag = 0;
      for (std::int64_t k = 0; k < D; ++k) {
        const double p = to_double(xp[t * D + k]) * to_double(wp[g * D + k]);
        dot += p;
        mag += std::fabs(p);
      }
      const double z = dot + to_double(lp[t * G + g]) - alpha[b];
      const double xv = to_double(xp[t * D + d]), qv = to_double(qp[t * D + d]);
      const double want = xv + qv / (1 + std::exp(-z));
      const double e32 = 0.25 * std::fabs(qv) * gamma * (mag + std::fabs(to_double(lp[t * G + g])) + alpha[b]) +
                         8 * kU32 * (std::fabs(xv) + std::fabs(qv));
      const double tol = u_out * std::fabs(want) + (1 + u_out) * e32;
      const double got = to_double(out[t * D + d]);
      if (!(std::fabs(got - want) <= tol) && bad++ < 5)
        std::fprintf(stderr, "  %s B=%lld L=%lld D=%lld G=%lld offset=%lld [t=%lld d=%lld]: got %.9g want %.9g tol %.3g\n",
                     sizeof(X) == 2 ? "bf16" : sizeof(P) == 2 ? "f32 x, bf16 rest" : "f32", (long long)B,
                     (long long)L, (long long)D, (long long)G, (long long)offset, (long long)t, (long long)d, got,
                     want, tol);
    }
  }
  return bad;
}

// The dtype combinations the API rejects, before any work (pid/sigma_gate.h): `gate` and `apply` are the CPU or
// CUDA functions, with their stream bound. Returns the number of combinations not rejected.
template <typename Gate, typename Apply>
int check_gate_rejects(Gate gate, Apply apply) {
  constexpr pid::DType f32 = pid::DType::kFloat32, bf16 = pid::DType::kBFloat16;
  const pid::SigmaGateSizes s{1, 1, 1, 1};
  int bad = expect_unsupported("sigma_gate, bfloat16 x with float32 lq", [&] {
    gate(pid::SigmaGateParams{s, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, bf16, f32});
  });
  bad += expect_unsupported("sigma_gate_apply, bfloat16 x with float32 lq", [&] {
    apply(pid::SigmaGateApplyParams{s, nullptr, nullptr, nullptr, nullptr, nullptr, bf16, f32, f32});
  });
  bad += expect_unsupported("sigma_gate_apply, float32 lq with bfloat16 logit", [&] {
    apply(pid::SigmaGateApplyParams{s, nullptr, nullptr, nullptr, nullptr, nullptr, f32, f32, bf16});
  });
  return bad;
}

}  // namespace pid_test
