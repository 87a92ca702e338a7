// Torch-free test of the CPU sigma_gate and sigma_gate_apply kernels against a naive double-precision loop, with
// the bound of sigma_gate_expect.h.
#include "sigma_gate_expect.h"

namespace {

using namespace pid_test;

template <typename X, typename P = X>
int check(std::int64_t B, std::int64_t L, std::int64_t D, std::int64_t G, unsigned seed) {
  return check_gate<X, P>(B, L, D, G, seed, pid::sigma_gate_cpu);
}

// sigma_gate_apply: the epilogue on a given logit z (float32 or the activations' dtype). The bound is that of
// sigma_gate_expect.h without the dot product: gamma(2) * (|z| + alpha) through sigmoid' <= 1/4, 8 u32 for the rest.
// T: x's and out's type, Q: lq's, Z: the logit's.
template <typename T, typename Q, typename Z>
int check_apply(std::int64_t B, std::int64_t L, std::int64_t D, std::int64_t G, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> uniform(0.f, 8.f);
  const std::int64_t N = B * L * D;
  std::vector<T> x(N), out(N);
  std::vector<Q> lq(N);
  std::vector<Z> z(static_cast<std::size_t>(B * L * G));
  for (auto& e : x) e = make<T>(normal(rng));
  for (auto& e : lq) e = make<Q>(normal(rng));
  for (auto& e : z) e = make<Z>(2 * normal(rng));
  std::vector<float> alpha(static_cast<std::size_t>(B));
  for (auto& a : alpha) a = uniform(rng);
  pid::sigma_gate_apply_cpu(pid::SigmaGateApplyParams{pid::SigmaGateSizes{B, L, D, G}, x.data(), lq.data(), z.data(),
                                                     alpha.data(), out.data(), pid::dtype_of<T>(), pid::dtype_of<Q>(),
                                                     pid::dtype_of<Z>()});
  const double u_out = sizeof(T) == 2 ? kUBf16 : kU32;
  const double gamma = 2 * kU32 / (1 - 2 * kU32);
  int bad = 0;
  for (std::int64_t t = 0; t < B * L; ++t) {
    const std::int64_t b = t / L;
    for (std::int64_t d = 0; d < D; ++d) {
      const double zv = to_double(z[t * G + (G == 1 ? 0 : d)]);
      const double xv = to_double(x[t * D + d]), qv = to_double(lq[t * D + d]);
      const double want = xv + qv / (1 + std::exp(-(zv - alpha[b])));
      const double e32 = 0.25 * std::fabs(qv) * gamma * (std::fabs(zv) + alpha[b]) + 8 * kU32 * (std::fabs(xv) + std::fabs(qv));
      const double tol = u_out * std::fabs(want) + (1 + u_out) * e32;
      const double got = to_double(out[t * D + d]);
      if (!(std::fabs(got - want) <= tol) && bad++ < 5)
        std::fprintf(stderr, "  apply B=%lld L=%lld D=%lld G=%lld [t=%lld d=%lld]: got %.9g want %.9g tol %.3g\n",
                     (long long)B, (long long)L, (long long)D, (long long)G, (long long)t, (long long)d, got, want, tol);
    }
  }
  return bad;
}

}  // namespace

int main() {
  const std::int64_t shapes[][3] = {{1, 1, 1}, {1, 7, 3}, {2, 17, 33}, {3, 5, 64}, {1, 40, 129}, {2, 19, 300}};
  int failed = 0, cases = 0;
  unsigned seed = 1;
  for (const auto& sh : shapes) {
    for (const std::int64_t G : {std::int64_t(1), sh[2]}) {
      failed += check<float>(sh[0], sh[1], sh[2], G, seed++) != 0;
      failed += check<pid::bf16>(sh[0], sh[1], sh[2], G, seed++) != 0;
      failed += check<float, pid::bf16>(sh[0], sh[1], sh[2], G, seed++) != 0;
      cases += 3;
      failed += check_apply<float, float, float>(sh[0], sh[1], sh[2], G, seed++) != 0;
      failed += check_apply<pid::bf16, pid::bf16, float>(sh[0], sh[1], sh[2], G, seed++) != 0;
      failed += check_apply<pid::bf16, pid::bf16, pid::bf16>(sh[0], sh[1], sh[2], G, seed++) != 0;
      failed += check_apply<float, pid::bf16, float>(sh[0], sh[1], sh[2], G, seed++) != 0;
      failed += check_apply<float, pid::bf16, pid::bf16>(sh[0], sh[1], sh[2], G, seed++) != 0;
      cases += 5;
    }
  }
  failed += check_gate_rejects(pid::sigma_gate_cpu, pid::sigma_gate_apply_cpu) != 0;
  ++cases;
  std::printf("sigma_gate_cpu: %d of %d cases passed\n", cases - failed, cases);
  return failed == 0 ? 0 : 1;
}
