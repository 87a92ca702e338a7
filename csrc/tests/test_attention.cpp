// Torch-free test of the CPU attention and qk_norm_rope kernels against naive double-precision loops.
//
// attention: the bound of attention_expect.h.
// qk_norm_rope: r = x / sqrt(mean(x^2) + eps) is off by gamma_n(d + 4) |r| (+ u_bf16 |r| when cast to
// bfloat16); y = w r adds u32 |y|; each rotated value adds |c| e_a + |s| e_b + 2 u32 (|a c| + |b s|).
#include "attention_expect.h"
#include "expect_unsupported.h"

namespace {

using namespace pid_test;

template <typename T>
int check_norm_rope(long B, long N, long H, long D, bool rope, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  const long stride_n = 3 * H * D + 5;  // padded rows: qkv is read through its strides
  std::vector<T> qkv(static_cast<std::size_t>(B * N * stride_n));
  for (auto& e : qkv) e = make<T>(normal(rng) * 2);
  std::vector<float> w(static_cast<std::size_t>(2 * D)), cs(static_cast<std::size_t>(N * D / 2)), sn(cs.size());
  for (auto& e : w) e = 1 + 0.3f * normal(rng);
  for (long n = 0; n < N; ++n)
    for (long i = 0; i < D / 2; ++i) {
      const double ang = n * std::pow(100.0, -2.0 * i / D);
      cs[n * D / 2 + i] = float(std::cos(ang)), sn[n * D / 2 + i] = float(std::sin(ang));
    }
  const long rows = N + 3, off = 2;
  std::vector<float> out(static_cast<std::size_t>(2 * B * H * rows * D), NAN);
  pid::QkNormRopeParams p{};
  p.B = B, p.N = N, p.H = H, p.D = D;
  p.qkv = qkv.data();
  p.qkv_stride[0] = N * stride_n, p.qkv_stride[1] = stride_n, p.qkv_stride[2] = H * D, p.qkv_stride[3] = D;
  p.qkv_dtype = pid::dtype_of<T>();
  p.q_weight = w.data(), p.k_weight = w.data() + D, p.weight_dtype = pid::DType::kFloat32;
  p.cos = rope ? cs.data() : nullptr, p.sin = rope ? sn.data() : nullptr;
  p.eps = 1e-6f;
  p.q_out = out.data(), p.k_out = out.data() + B * H * rows * D;
  p.q_rows = p.k_rows = rows, p.q_offset = p.k_offset = off;
  p.out_dtype = pid::DType::kFloat32;
  pid::qk_norm_rope_cpu(p);

  const double u_in = sizeof(T) == 2 ? kUBf16 : 0.0;
  int bad = 0;
  for (long which = 0; which < 2; ++which)
    for (long b = 0; b < B; ++b)
      for (long n = 0; n < N; ++n)
        for (long h = 0; h < H; ++h) {
          const T* x = qkv.data() + b * N * stride_n + n * stride_n + which * H * D + h * D;
          double ss = 0;
          for (long d = 0; d < D; ++d) ss += to_double(x[d]) * to_double(x[d]);
          const double inv = 1 / std::sqrt(ss / D + 1e-6);
          std::vector<double> y(static_cast<std::size_t>(D)), ey(y.size());
          for (long d = 0; d < D; ++d) {
            const double r = to_double(x[d]) * inv, wd = w[which * D + d];
            y[d] = wd * r;
            ey[d] = std::fabs(wd) * (u_in + gamma_n(D + 4) * (1 + u_in)) * std::fabs(r) * (1 + kU32) + kU32 * std::fabs(y[d]);
          }
          for (long i = 0; i < D / 2; ++i) {
            const double c = rope ? cs[n * D / 2 + i] : 1.0, s = rope ? sn[n * D / 2 + i] : 0.0;
            const double a = y[2 * i], bb = y[2 * i + 1], ea = ey[2 * i], eb = ey[2 * i + 1];
            const double want[2] = {a * c - bb * s, a * s + bb * c};
            const double ya = std::fabs(a) + ea, yb = std::fabs(bb) + eb;
            const double tol[2] = {std::fabs(c) * ea + std::fabs(s) * eb + 2 * kU32 * (ya * std::fabs(c) + yb * std::fabs(s)),
                                   std::fabs(s) * ea + std::fabs(c) * eb + 2 * kU32 * (ya * std::fabs(s) + yb * std::fabs(c))};
            for (int e = 0; e < 2; ++e) {
              const double got = out[which * B * H * rows * D + ((b * H + h) * rows + off + n) * D + 2 * i + e];
              if (!(std::fabs(got - want[e]) <= tol[e]) && bad++ < 5)
                std::fprintf(stderr, "  qk_norm_rope %s N=%ld H=%ld D=%ld rope=%d [%ld,%ld,%ld,%ld]: got %.9g want %.9g tol %.3g\n",
                             sizeof(T) == 2 ? "bf16" : "f32", N, H, D, int(rope), which, b, n, 2 * i + e, got, want[e], tol[e]);
            }
          }
        }
  // Rows outside [offset, offset + N) stay untouched.
  for (long which = 0; which < 2; ++which)
    for (long bh = 0; bh < B * H; ++bh)
      for (long r = 0; r < rows; ++r)
        if (r < off || r >= off + N)
          for (long d = 0; d < D; ++d)
            if (!std::isnan(out[which * B * H * rows * D + (bh * rows + r) * D + d]) && bad++ < 5)
              std::fprintf(stderr, "  qk_norm_rope wrote outside its rows (row %ld)\n", r);
  return bad;
}

}  // namespace

int main() {
  const Case cases[] = {
      {1, 1, 1, 1, 1, 0, 0, 0, 0},         {1, 2, 5, 7, 8, 0, 0, 0, 0},        {2, 3, 70, 130, 64, 0, 0, 0, 0},
      {1, 2, 129, 65, 72, 0, 0, 0, 0},     {1, 1, 3, 200, 13, 0, 0, 0, 0},     {1, 2, 21, 21, 72, 3, 3, 7, 0},
      {1, 1, 5, 5, 64, 3, 1, 5, 0},        {2, 2, 87, 87, 64, 4, 7, 9, 24},    {1, 2, 63, 133, 72, 5, 7, 9, 70},
      {1, 1, 150, 150, 16, 2, 10, 15, 0},  {1, 1, 31, 31, 8, 1, 3, 7, 10},     {1, 2, 35, 35, 72, 9, 5, 7, 0},
      {1, 1, 300, 300, 64, 6, 17, 16, 28},
  };
  int failed = 0, n = 0;
  unsigned seed = 1;
  for (const Case& c : cases) {
    failed += check_attention<float>(c, seed++, pid::attention_cpu) != 0;
    failed += check_attention<pid::bf16>(c, seed++, pid::attention_cpu) != 0;
    n += 2;
  }
  const long nr[][4] = {{1, 1, 1, 2}, {2, 5, 3, 8}, {1, 9, 2, 64}, {2, 4, 3, 72}, {1, 3, 1, 30}};
  for (const auto& s : nr)
    for (const bool rope : {false, true}) {
      failed += check_norm_rope<float>(s[0], s[1], s[2], s[3], rope, seed++) != 0;
      failed += check_norm_rope<pid::bf16>(s[0], s[1], s[2], s[3], rope, seed++) != 0;
      n += 2;
    }
  // Rejected before any work: a tag that is no DType.
  pid::AttentionParams p{};
  p.B = p.H = p.Sq = p.Sk = 1, p.D = 8, p.dtype = static_cast<pid::DType>(9);
  failed += expect_unsupported("attention_cpu, dtype 9", [&] { pid::attention_cpu(p); });
  float out[2] = {};
  pid::QkNormRopeParams r{};
  r.B = r.N = r.H = 1, r.D = 2, r.q_out = out, r.q_rows = 1, r.weight_dtype = static_cast<pid::DType>(9);
  failed += expect_unsupported("qk_norm_rope_cpu, weight_dtype 9", [&] { pid::qk_norm_rope_cpu(r); });
  n += 2;
  std::printf("attention_cpu, qk_norm_rope_cpu: %d of %d cases passed\n", n - failed, n);
  return failed == 0 ? 0 : 1;
}
