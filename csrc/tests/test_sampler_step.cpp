// Torch-free test of the CPU sampler step kernels.
//
// 1. Bit-equality with a plain scalar loop that spells out the operation order of pid/sampler_step.h
//    (this file is compiled with -ffp-contract=off, like the kernels, so each operation rounds once):
//    the contract is "the same operations in the same order", which vectorisation and threads must keep.
// 2. Closeness to a double evaluation of the same formulas, within a bound derived operation by operation
//    (running error analysis, float32 unit roundoff u = 2^-24), so the expected values in (1) are not
//    wrong in the same way as the kernel.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "expect_unsupported.h"
#include "pid/sampler_step.h"

namespace {

constexpr double kU = 0x1p-24;  // unit roundoff of float32

float to_f(float v) { return v; }
float to_f(pid::bf16 v) { return pid::bf16_to_float(v); }
template <typename T> T make(float v);
template <> float make<float>(float v) { return v; }
template <> pid::bf16 make<pid::bf16>(float v) { return pid::float_to_bf16(v); }

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// A double value with a bound on the error of its float32 computation.
struct B {
  double v, e;
};
B rnd(double v, double prop) { return {v, prop + kU * (std::fabs(v) + prop)}; }
B add(B a, B b) { return rnd(a.v + b.v, a.e + b.e); }
B sub(B a, B b) { return rnd(a.v - b.v, a.e + b.e); }
B mul(B a, B b) { return rnd(a.v * b.v, std::fabs(a.v) * b.e + std::fabs(b.v) * a.e + a.e * b.e); }
B dvd(B a, B b) {
  const double q = a.v / b.v;
  return rnd(q, (a.e + std::fabs(q) * b.e) / (std::fabs(b.v) - b.e));
}
B ex(double v) { return {v, 0.0}; }

int g_failures = 0;

void expect(bool ok, const char* what, long long n, long long i, double got, double want, double tol) {
  if (!ok && g_failures++ < 10)
    std::fprintf(stderr, "  %s n=%lld [%lld]: got %.9g want %.9g (bound %.3g)\n", what, n, i, got, want, tol);
}

template <typename V>
int check_student(std::int64_t n, bool with_eps, bool with_x0, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> x(n), eps(n), out(n), x0(n);
  std::vector<V> v(n);
  for (std::int64_t i = 0; i < n; ++i) x[i] = normal(rng), eps[i] = normal(rng), v[i] = make<V>(2 * normal(rng));
  const float t = 0.866f, tn = with_eps ? 0.634f : 0.0f;
  pid::student_step_cpu({n, x.data(), v.data(), pid::dtype_of<V>(), with_eps ? eps.data() : nullptr, t, tn, out.data(),
                         with_x0 ? x0.data() : nullptr});
  const int before = g_failures;
  for (std::int64_t i = 0; i < n; ++i) {
    const double d = double(x[i]) - double(t) * double(to_f(v[i]));
    const float x0_want = float(d);
    float want = x0_want;
    if (with_eps) {
      const float c = 1.0f - tn;
      const float p = c * x0_want, q = tn * eps[i];
      want = p + q;
    }
    expect(same_bits(out[i], want), "student bits", n, i, out[i], want, 0);
    if (with_x0) expect(same_bits(x0[i], x0_want), "student x0 bits", n, i, x0[i], x0_want, 0);
    B r{d, kU * std::fabs(d)};
    if (with_eps) r = add(mul(sub(ex(1.0), ex(tn)), r), mul(ex(tn), ex(eps[i])));
    expect(std::fabs(out[i] - r.v) <= r.e * (1 + 0x1p-20), "student vs double", n, i, out[i], r.v, r.e);
  }
  return g_failures != before;
}

template <typename V>
int check_dpm(std::int64_t n, bool guided, int order, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> x(n), dp(n), xn(n), d(n);
  std::vector<V> vc(n), vu(n);
  for (std::int64_t i = 0; i < n; ++i) {
    x[i] = normal(rng), dp[i] = normal(rng);
    vc[i] = make<V>(2 * normal(rng)), vu[i] = make<V>(2 * normal(rng));
  }
  // Scalars of a second step of DPM-Solver++(2M), N = 6, shift 6 (float32 values).
  const pid::DpmStepCoeffs k{3.5f, 0.99436f, 0.98291f, -0.011736f, -0.005868f, 1.4142f};
  pid::dpm_step_cpu({n, x.data(), vc.data(), guided ? vu.data() : nullptr, pid::dtype_of<V>(),
                     order == 2 ? dp.data() : nullptr, k, order == 0 ? nullptr : xn.data(), d.data()});
  const int before = g_failures;
  const float u = 1.0f - k.t;
  for (std::int64_t i = 0; i < n; ++i) {
    float v = to_f(vc[i]);
    if (guided) {
      const float diff = v - to_f(vu[i]);
      const float m = k.guidance * diff;
      v = to_f(vu[i]) + m;
    }
    const float uv = u * v;
    const float e = uv + x[i];
    const float te = k.t * e;
    const float num = x[i] - te;
    const float d_want = num / u;
    expect(same_bits(d[i], d_want), "dpm D bits", n, i, d[i], d_want, 0);
    B bv = guided ? add(ex(to_f(vu[i])), mul(ex(k.guidance), sub(ex(to_f(vc[i])), ex(to_f(vu[i]))))) : ex(to_f(vc[i]));
    const B bu = sub(ex(1.0), ex(k.t));
    const B bd = dvd(sub(ex(x[i]), mul(ex(k.t), add(mul(bu, bv), ex(x[i])))), bu);
    expect(std::fabs(d[i] - bd.v) <= bd.e * (1 + 0x1p-20), "dpm D vs double", n, i, d[i], bd.v, bd.e);
    if (order == 0) continue;
    const float ax = k.t_ratio * x[i], bdv = k.alpha_phi * d_want;
    float want = ax - bdv;
    B bx = sub(mul(ex(k.t_ratio), ex(x[i])), mul(ex(k.alpha_phi), bd));
    if (order == 2) {
      const float diff = d_want - dp[i];
      const float q = k.inv_r * diff;
      const float c = k.half_alpha_phi * q;
      want = want - c;
      bx = sub(bx, mul(ex(k.half_alpha_phi), mul(ex(k.inv_r), sub(bd, ex(dp[i])))));
    }
    expect(same_bits(xn[i], want), "dpm x_next bits", n, i, xn[i], want, 0);
    expect(std::fabs(xn[i] - bx.v) <= bx.e * (1 + 0x1p-20), "dpm x_next vs double", n, i, xn[i], bx.v, bx.e);
  }
  return g_failures != before;
}

}  // namespace

int main() {
  const std::int64_t sizes[] = {0, 1, 3, 7, 17, 64, 1001, 40000, 100003};  // vector tails; 40000+ is threaded
  int failed = 0, cases = 0;
  unsigned seed = 1;
  for (const std::int64_t n : sizes) {
    for (const bool eps : {false, true})
      for (const bool x0 : {false, true}) {
        failed += check_student<float>(n, eps, x0, seed++);
        failed += check_student<pid::bf16>(n, eps, x0, seed++);
        cases += 2;
      }
    for (const bool guided : {false, true})
      for (const int order : {0, 1, 2}) {
        failed += check_dpm<float>(n, guided, order, seed++);
        failed += check_dpm<pid::bf16>(n, guided, order, seed++);
        cases += 2;
      }
  }
  // Rejected before any work: a velocity tag that is no DType.
  const auto bad_tag = static_cast<pid::DType>(5);
  failed += pid_test::expect_unsupported("student_step_cpu, v_dtype 5", [&] {
    pid::student_step_cpu({1, nullptr, nullptr, bad_tag, nullptr, 0.5f, 0.25f, nullptr, nullptr});
  });
  failed += pid_test::expect_unsupported("dpm_step_cpu, v_dtype 5", [&] {
    pid::dpm_step_cpu({1, nullptr, nullptr, nullptr, bad_tag, nullptr, {}, nullptr, nullptr});
  });
  cases += 2;
  std::printf("sampler_step_cpu: %d of %d cases passed\n", cases - failed, cases);
  return failed == 0 ? 0 : 1;
}
