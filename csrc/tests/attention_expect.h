// Naive double-precision attention and its rounding-error bound, shared by the torch-free tests of the
// CPU kernel (test_attention.cpp) and of the CUDA tensor-core kernel run under emulation
// (test_attention_mma_emulated.cpp).
//
// Per query i over its visible keys j (the window rule written out again here, independently of
// pid::window_start): with exact scores s_j, weights w_j and score error bound
//   delta = max_j gamma_n(d + 2) * scale * sum_k |q_k k_jk| + 2 u32 |s_j - max s|,
// |o - exact| <= (2 delta + 8 u32 + 2 gamma_n(Sk + Sk/8 + 4) [+ u_bf16]) * sum_j w_j |v_j| (+ u_out |exact| for
// bf16). The bracketed term is for kernels that round the weights to bfloat16 before the product with v.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "pid/attention.h"

namespace pid_test {

constexpr double kU32 = 0x1p-24;
constexpr double kUBf16 = 0x1p-8;

inline double gamma_n(double n) { return n * kU32 / (1 - n * kU32); }
inline double to_double(float v) { return v; }
inline double to_double(pid::bf16 v) { return pid::bf16_to_float(v); }
template <typename T> T make(float v);
template <> inline float make<float>(float v) { return v; }
template <> inline pid::bf16 make<pid::bf16>(float v) { return pid::float_to_bf16(v); }

// Independent statement of the window rule: w positions, centred (even w: one more before), clamped.
inline bool in_window(long i, long a, long w, long n) {
  const long len = std::min(w, n);
  long start = i - w / 2;
  start = std::max(0L, std::min(start, n - len));
  return a >= start && a < start + len;
}

struct Case {
  long B, H, Sq, Sk, D, window, gh, gw, n_text;
};

// A case whose q, k, v rows are `pad` elements longer than D.
struct PaddedCase {
  Case c;
  long pad;
};

// Fixed cases at the CUDA kernels' head dims (64, 72): single keys, odd and unequal lengths, padded strides,
// windows with and without text, image queries only (Sq < Sk), a window of 1.
inline constexpr PaddedCase kCudaHeadDimCases[] = {
    {{1, 1, 1, 1, 64, 0, 0, 0, 0}, 0},      {{1, 2, 5, 7, 72, 0, 0, 0, 0}, 0},
    {{2, 1, 70, 130, 64, 0, 0, 0, 0}, 0},   {{1, 1, 129, 65, 72, 0, 0, 0, 0}, 8},
    {{1, 1, 66, 70, 72, 0, 0, 0, 0}, 3},    {{1, 2, 21, 21, 72, 3, 3, 7, 0}, 0},
    {{1, 1, 87, 87, 64, 4, 7, 9, 24}, 0},   {{1, 1, 63, 133, 72, 5, 7, 9, 70}, 1},
    {{1, 1, 35, 35, 72, 9, 5, 7, 0}, 0},    {{1, 1, 300, 300, 64, 6, 17, 16, 28}, 0},
    {{1, 1, 100, 100, 64, 1, 10, 10, 0}, 0},
};

// Runs `run(params)` on random inputs of case c, the params pointing at host arrays (a GPU run copies them),
// and counts the outputs outside the bound. q, k, v rows are `pad` elements longer than D (strides that are not
// multiples of a vector width).
template <typename T, typename Run>
int check_attention(const Case& c, unsigned seed, Run run, bool bf16_weights = false, long pad = 0) {
  const long ts = c.D + pad;  // token stride of q, k, v
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  const float sharp = 1.5f;
  auto fill = [&](long n, float s) {
    std::vector<T> v(static_cast<std::size_t>(n));
    for (auto& e : v) e = make<T>(normal(rng) * s);
    return v;
  };
  const auto q = fill(c.B * c.H * c.Sq * ts, sharp), k = fill(c.B * c.H * c.Sk * ts, sharp),
             v = fill(c.B * c.H * c.Sk * ts, 1.f);
  std::vector<T> o(static_cast<std::size_t>(c.B * c.H * c.Sq * c.D));
  pid::AttentionParams p{};
  p.B = c.B, p.H = c.H, p.Sq = c.Sq, p.Sk = c.Sk, p.D = c.D;
  p.q = q.data(), p.k = k.data(), p.v = v.data(), p.o = o.data();
  p.dtype = pid::dtype_of<T>();
  p.q_stride = {c.H * c.Sq * ts, c.Sq * ts, ts};
  p.k_stride = p.v_stride = {c.H * c.Sk * ts, c.Sk * ts, ts};
  p.o_stride = {c.Sq * c.H * c.D, c.D, c.H * c.D};  // [B, Sq, H, D] memory, as the torch binding
  p.scale = float(1.0 / std::sqrt(double(c.D)));
  p.window = c.window, p.grid_h = c.gh, p.grid_w = c.gw, p.n_text = c.n_text;
  run(p);

  const double scale = 1.0 / std::sqrt(double(c.D));
  const double u_out = sizeof(T) == 2 ? kUBf16 : 0.0;
  const long q_off = c.Sk - c.Sq;  // windowed: the queries are the last Sq tokens
  int bad = 0;
  std::vector<double> s(static_cast<std::size_t>(c.Sk)), mag(s.size());
  std::vector<char> vis(s.size());
  for (long b = 0; b < c.B; ++b)
    for (long h = 0; h < c.H; ++h)
      for (long i = 0; i < c.Sq; ++i) {
        const T* qi = q.data() + ((b * c.H + h) * c.Sq + i) * ts;
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
          const T* kj = k.data() + ((b * c.H + h) * c.Sk + j) * ts;
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
            delta = std::max(delta, gamma_n(c.D + 2) * mag[j] + 2 * kU32 * (mx - s[j]));
          }
        const double werr = 2 * delta + 8 * kU32 + 2 * gamma_n(c.Sk + c.Sk / 8 + 4) + (bf16_weights ? kUBf16 : 0.0);
        for (long d = 0; d < c.D; ++d) {
          double exact = 0, absv = 0;
          for (long j = 0; j < c.Sk; ++j)
            if (vis[j]) {
              const double w = std::exp(s[j] - mx) / sum, vj = to_double(v[((b * c.H + h) * c.Sk + j) * ts + d]);
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

}  // namespace pid_test
