// Torch-free test of the CPU attention and qk_norm_rope kernels against naive double-precision loops.
//
// attention, per query i over its visible keys j (the window rule written out again here, independently
// of pid::window_start): with exact scores s_j, weights w_j and score error bound
//   delta = max_j gamma(d + 2) * scale * sum_k |q_k k_jk| + 2 u32 |s_j - max s|,
// |o - exact| <= (2 delta + 8 u32 + 2 gamma(Sk + Sk/8 + 4)) * sum_j w_j |v_j| (+ u_out |exact| for bf16).
// qk_norm_rope: r = x / sqrt(mean(x^2) + eps) is off by gamma(d + 4) |r| (+ u_bf16 |r| when cast to
// bfloat16); y = w r adds u32 |y|; each rotated value adds |c| e_a + |s| e_b + 2 u32 (|a c| + |b s|).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "pid/attention.h"

namespace {

constexpr double kU32 = 0x1p-24;
constexpr double kUBf16 = 0x1p-8;

double gamma(double n) { return n * kU32 / (1 - n * kU32); }
double to_double(float v) { return v; }
double to_double(pid::bf16 v) { return pid::bf16_to_float(v); }
template <typename T> T make(float v);
template <> float make<float>(float v) { return v; }
template <> pid::bf16 make<pid::bf16>(float v) { return pid::float_to_bf16(v); }

// Independent statement of the window rule: w positions, centred (even w: one more before), clamped.
bool in_window(long i, long a, long w, long n) {
  const long len = std::min(w, n);
  long start = i - w / 2;
  start = std::max(0L, std::min(start, n - len));
  return a >= start && a < start + len;
}

struct Case {
  long B, H, Sq, Sk, D, window, gh, gw, n_text;
};

template <typename T>
int check_attention(const Case& c, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  const float sharp = 1.5f;
  auto fill = [&](long n, float s) {
    std::vector<T> v(static_cast<std::size_t>(n));
    for (auto& e : v) e = make<T>(normal(rng) * s);
    return v;
  };
  const auto q = fill(c.B * c.H * c.Sq * c.D, sharp), k = fill(c.B * c.H * c.Sk * c.D, sharp),
             v = fill(c.B * c.H * c.Sk * c.D, 1.f);
  std::vector<T> o(q.size());
  pid::AttentionParams p{};
  p.B = c.B, p.H = c.H, p.Sq = c.Sq, p.Sk = c.Sk, p.D = c.D;
  p.q = {c.H * c.Sq * c.D, c.Sq * c.D, c.D};
  p.k = p.v = {c.H * c.Sk * c.D, c.Sk * c.D, c.D};
  p.o = {c.Sq * c.H * c.D, c.D, c.H * c.D};  // [B, Sq, H, D] memory, as the torch binding
  p.scale = float(1.0 / std::sqrt(double(c.D)));
  p.window = c.window, p.grid_h = c.gh, p.grid_w = c.gw, p.n_text = c.n_text;
  pid::attention_cpu(q.data(), k.data(), v.data(), o.data(), p);

  const double scale = 1.0 / std::sqrt(double(c.D));
  const double u_out = sizeof(T) == 2 ? kUBf16 : 0.0;
  const long q_off = c.Sk - c.Sq;  // windowed: the queries are the last Sq tokens
  int bad = 0;
  std::vector<double> s(static_cast<std::size_t>(c.Sk)), mag(s.size());
  std::vector<char> vis(s.size());
  for (long b = 0; b < c.B; ++b)
    for (long h = 0; h < c.H; ++h)
      for (long i = 0; i < c.Sq; ++i) {
        const T* qi = q.data() + ((b * c.H + h) * c.Sq + i) * c.D;
        const long pos = i + q_off;
        double mx = -INFINITY;
        for (long j = 0; j < c.Sk; ++j) {
          bool ok = true;
          if (c.window > 0 && pos >= c.n_text && j >= c.n_text) {
            const long pi = (pos - c.n_text) / c.gw, pj = (pos - c.n_text) % c.gw;
            const long ki = (j - c.n_text) / c.gw, kj = (j - c.n_text) % c.gw;
            ok = in_window(pi, ki, c.window, c.gh) && in_window(pj, kj, c.window, c.gw);
          }
          vis[j] = ok;
          if (!ok) continue;
          const T* kj = k.data() + ((b * c.H + h) * c.Sk + j) * c.D;
          double dot = 0, m = 0;
          for (long d = 0; d < c.D; ++d) {
            dot += to_double(qi[d]) * to_double(kj[d]);
            m += std::fabs(to_double(qi[d]) * to_double(kj[d]));
          }
          s[j] = dot * scale, mag[j] = m * scale;
          mx = std::max(mx, s[j]);
        }
        double sum = 0, delta = 0;
        for (long j = 0; j < c.Sk; ++j)
          if (vis[j]) {
            sum += std::exp(s[j] - mx);
            delta = std::max(delta, gamma(c.D + 2) * mag[j] + 2 * kU32 * (mx - s[j]));
          }
        const double werr = 2 * delta + 8 * kU32 + 2 * gamma(c.Sk + c.Sk / 8 + 4);
        for (long d = 0; d < c.D; ++d) {
          double exact = 0, absv = 0;
          for (long j = 0; j < c.Sk; ++j)
            if (vis[j]) {
              const double w = std::exp(s[j] - mx) / sum, vj = to_double(v[((b * c.H + h) * c.Sk + j) * c.D + d]);
              exact += w * vj;
              absv += w * std::fabs(vj);
            }
          const double tol = u_out * std::fabs(exact) + (1 + u_out) * werr * absv;
          const double got = to_double(o[((b * c.Sq + i) * c.H + h) * c.D + d]);
          if (!(std::fabs(got - exact) <= tol) && bad++ < 5)
            std::fprintf(stderr, "  attention %s B=%ld H=%ld Sq=%ld Sk=%ld D=%ld w=%ld grid=%ldx%ld text=%ld [%ld,%ld,%ld,%ld]: "
                         "got %.9g want %.9g tol %.3g\n", sizeof(T) == 2 ? "bf16" : "f32", c.B, c.H, c.Sq, c.Sk, c.D,
                         c.window, c.gh, c.gw, c.n_text, b, h, i, d, got, exact, tol);
        }
      }
  return bad;
}

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
  p.qkv_dtype = sizeof(T) == 2 ? pid::DType::kBFloat16 : pid::DType::kFloat32;
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
            ey[d] = std::fabs(wd) * (u_in + gamma(D + 4) * (1 + u_in)) * std::fabs(r) * (1 + kU32) + kU32 * std::fabs(y[d]);
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
    failed += check_attention<float>(c, seed++) != 0;
    failed += check_attention<pid::bf16>(c, seed++) != 0;
    n += 2;
  }
  const long nr[][4] = {{1, 1, 1, 2}, {2, 5, 3, 8}, {1, 9, 2, 64}, {2, 4, 3, 72}, {1, 3, 1, 30}};
  for (const auto& s : nr)
    for (const bool rope : {false, true}) {
      failed += check_norm_rope<float>(s[0], s[1], s[2], s[3], rope, seed++) != 0;
      failed += check_norm_rope<pid::bf16>(s[0], s[1], s[2], s[3], rope, seed++) != 0;
      n += 2;
    }
  std::printf("attention_cpu, qk_norm_rope_cpu: %d of %d cases passed\n", n - failed, n);
  return failed == 0 ? 0 : 1;
}
