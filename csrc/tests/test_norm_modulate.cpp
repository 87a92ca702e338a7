// Torch-free test of the CPU rms_norm_modulate and gated_residual kernels.
//
// 1. Against a double-precision evaluation of the exact formula, with a per-element bound derived from
//    the float32 roundings of the algorithm (u = unit roundoff, gamma(n) = n u / (1 - n u)):
//    rms_norm_modulate: the sum of squares, /D and +eps are off by at most gamma(D+2) relative, sqrt
//    halves that, sqrt and the reciprocal round once each (we allow 2 ulp = 4u for CUDA's rsqrtf), then
//    x*r, w*n, 1+scale and the product round once each (u32) and the bfloat16 casts of n and of 1+scale
//    add u_bf16 each; the final add rounds relative to the result (u32) and the cast to the output
//    dtype adds u_out. gated_residual: the product (u32, plus u_bf16 when gate and y are both bfloat16),
//    the add (u32) and the output cast (u_out).
// 2. Bit-exactness against a scalar float emulation of the PyTorch reference, step by step, on
//    integer-valued x, where every order of the sum of squares gives the same (exact) float32 sum.
//    Built with -ffp-contract=off, like the kernel.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "expect_unsupported.h"
#include "pid/norm_modulate.h"

namespace {

using pid::dtype_of;

constexpr double kU32 = 0x1p-24;   // unit roundoff of float32
constexpr double kUBf16 = 0x1p-8;  // unit roundoff of bfloat16
constexpr float kEps = 1e-6f;

template <typename T> constexpr double unit_roundoff() { return sizeof(T) == 2 ? kUBf16 : 0.0; }  // of a cast to T

float to_float(float v) { return v; }
float to_float(pid::bf16 v) { return pid::bf16_to_float(v); }
template <typename T> T make(float v);
template <> float make<float>(float v) { return v; }
template <> pid::bf16 make<pid::bf16>(float v) { return pid::float_to_bf16(v); }
template <typename T> float round_to(float v) { return to_float(make<T>(v)); }

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

const char* name(pid::DType t) { return pid::dtype_name(t); }

// Modulation chunks live in one buffer of K = 6 chunks per row, as the adaLN outputs do.
// per_token: [B, L, 6D] (PiT per-pixel modulation); else [B, 1, 6D] broadcast over L (MMDiT).
struct Layout {
  std::int64_t B, L, D;
  bool per_token;
  std::int64_t rows_b() const { return per_token ? L : 1; }
  std::int64_t stride_b() const { return rows_b() * 6 * D; }
  std::int64_t stride_l() const { return per_token ? 6 * D : 0; }
  std::int64_t size() const { return B * stride_b(); }
  std::int64_t at(std::int64_t chunk, std::int64_t b, std::int64_t l, std::int64_t d) const {
    return b * stride_b() + l * stride_l() + chunk * D + d;
  }
};

template <typename TX, typename TM, typename TO>
int check_norm(const Layout& lay, bool integer_x, unsigned seed) {
  const std::int64_t B = lay.B, L = lay.L, D = lay.D;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::uniform_int_distribution<int> small_int(-16, 16);
  std::vector<TX> x(static_cast<std::size_t>(B * L * D));
  for (auto& v : x) v = make<TX>(integer_x ? float(small_int(rng)) : normal(rng) * 3.f);
  std::vector<float> w(static_cast<std::size_t>(D));
  for (auto& v : w) v = 1.f + 0.2f * normal(rng);
  std::vector<TM> mods(static_cast<std::size_t>(lay.size()));
  for (auto& v : mods) v = make<TM>(normal(rng));
  std::vector<TO> out(static_cast<std::size_t>(B * L * D));
  const int shift_chunk = 3, scale_chunk = 4;  // PiT norm2's chunks; any two work

  pid::NormModulateParams a{B, L, D,
                            {x.data(), dtype_of<TX>(), L * D, D},
                            w.data(),
                            {mods.data() + shift_chunk * D, dtype_of<TM>(), lay.stride_b(), lay.stride_l()},
                            {mods.data() + scale_chunk * D, dtype_of<TM>(), lay.stride_b(), lay.stride_l()},
                            out.data(), dtype_of<TO>(), kEps};
  pid::rms_norm_modulate_cpu(a);

  const double u_x = unit_roundoff<TX>(), u_m = unit_roundoff<TM>(), u_o = sizeof(TO) == 2 ? kUBf16 : kU32;
  const double g = (D + 2) * kU32 / (1 - (D + 2) * kU32);
  const double rho_sqrt = 0.5 * g / (1 - g);
  const double rho_r = (1 + rho_sqrt / (1 - rho_sqrt)) * (1 + 4 * kU32) - 1;
  const double P = (1 + rho_r) * std::pow(1 + kU32, 4) * (1 + u_x) * (1 + u_m) - 1;
  int bad = 0;
  for (std::int64_t b = 0; b < B; ++b) {
    for (std::int64_t l = 0; l < L; ++l) {
      const TX* xr = x.data() + (b * L + l) * D;
      double ss = 0;
      float ss_f = 0;  // the emulation's float32 sum (exact for integer x)
      for (std::int64_t d = 0; d < D; ++d) {
        const double v = to_float(xr[d]);
        ss += v * v;
        ss_f += to_float(xr[d]) * to_float(xr[d]);
      }
      const double r = 1 / std::sqrt(ss / D + double(kEps));
      const float r_f = 1.f / std::sqrt(ss_f / float(D) + kEps);
      for (std::int64_t d = 0; d < D; ++d) {
        const double sh = to_float(mods[lay.at(shift_chunk, b, l, d)]);
        const double sc = to_float(mods[lay.at(scale_chunk, b, l, d)]);
        const double prod = w[d] * (to_float(xr[d]) * r) * (1 + sc);
        const double want = prod + sh;
        const double A = std::fabs(prod);
        const double tol = A * P + kU32 * (std::fabs(want) + A * P) + u_o * (1 + kU32) * (std::fabs(want) + A * P);
        const float got = to_float(out[(b * L + l) * D + d]);
        const bool ok_exact = std::fabs(got - want) <= tol;
        bool ok_bits = true;
        float emu = 0;
        if (integer_x) {  // the reference's roundings, one by one
          const float n = round_to<TX>(to_float(xr[d]) * r_f);
          const float nw = w[d] * n;
          const float s1 = round_to<TM>(1.f + float(sc));
          const float m = nw * s1;
          emu = round_to<TO>(m + float(sh));
          ok_bits = same_bits(got, emu);
        }
        if ((!ok_exact || !ok_bits) && bad++ < 5)
          std::fprintf(stderr,
                       "  rms_norm_modulate x %s mods %s out %s B=%lld L=%lld D=%lld per_token=%d int=%d "
                       "[%lld,%lld,%lld]: got %.9g want %.9g tol %.3g emulated %.9g\n",
                       name(dtype_of<TX>()), name(dtype_of<TM>()), name(dtype_of<TO>()), (long long)B, (long long)L,
                       (long long)D, int(lay.per_token), int(integer_x), (long long)b, (long long)l, (long long)d,
                       got, want, tol, emu);
      }
    }
  }
  return bad;
}

template <typename TX, typename TG, typename TY, typename TO>
int check_gated(const Layout& lay, unsigned seed) {
  const std::int64_t B = lay.B, L = lay.L, D = lay.D;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  const std::int64_t N = B * L * D;
  std::vector<TX> x(static_cast<std::size_t>(N));
  std::vector<TY> y(static_cast<std::size_t>(N));
  std::vector<TG> mods(static_cast<std::size_t>(lay.size()));
  for (auto& v : x) v = make<TX>(normal(rng) * 4.f);
  for (auto& v : y) v = make<TY>(normal(rng));
  for (auto& v : mods) v = make<TG>(normal(rng));
  std::vector<TO> out(static_cast<std::size_t>(N));
  const int gate_chunk = 2;
  pid::GatedResidualParams a{B, L, D,
                             {x.data(), dtype_of<TX>(), L * D, D},
                             {mods.data() + gate_chunk * D, dtype_of<TG>(), lay.stride_b(), lay.stride_l()},
                             {y.data(), dtype_of<TY>(), L * D, D},
                             out.data(), dtype_of<TO>()};
  pid::gated_residual_cpu(a);

  const bool bf16_product = sizeof(TG) == 2 && sizeof(TY) == 2;
  const double u_o = sizeof(TO) == 2 ? kUBf16 : kU32;
  const double Pg = (1 + kU32) * (1 + (bf16_product ? kUBf16 : 0.0)) - 1;
  int bad = 0;
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t l = 0; l < L; ++l)
      for (std::int64_t d = 0; d < D; ++d) {
        const std::int64_t i = (b * L + l) * D + d;
        const double gv = to_float(mods[lay.at(gate_chunk, b, l, d)]);
        const double prod = gv * to_float(y[i]);
        const double want = to_float(x[i]) + prod;
        const double A = std::fabs(prod);
        const double tol = A * Pg + kU32 * (std::fabs(want) + A * Pg) + u_o * (1 + kU32) * (std::fabs(want) + A * Pg);
        // Emulation of `(x + gate * y).to(x.dtype)` with PyTorch's promotion rules.
        float p = float(gv) * to_float(y[i]);
        if (bf16_product) p = round_to<pid::bf16>(p);
        const float emu = round_to<TO>(to_float(x[i]) + p);
        const float got = to_float(out[i]);
        if ((!(std::fabs(got - want) <= tol) || !same_bits(got, emu)) && bad++ < 5)
          std::fprintf(stderr,
                       "  gated_residual x %s gate %s y %s out %s B=%lld L=%lld D=%lld [%lld]: got %.9g want %.9g "
                       "tol %.3g emulated %.9g\n",
                       name(dtype_of<TX>()), name(dtype_of<TG>()), name(dtype_of<TY>()), name(dtype_of<TO>()),
                       (long long)B, (long long)L, (long long)D, (long long)i, got, want, tol, emu);
      }
  return bad;
}

template <typename TX, typename TM, typename TO>
void norm_cases(const Layout& lay, unsigned& seed, int& cases, int& failed) {
  for (const bool integer_x : {false, true}) {
    failed += check_norm<TX, TM, TO>(lay, integer_x, seed++) != 0;
    ++cases;
  }
}

template <typename TX, typename TG>
void gated_cases(const Layout& lay, unsigned& seed, int& cases, int& failed) {
  failed += check_gated<TX, TG, float, TX>(lay, seed++) != 0;
  failed += check_gated<TX, TG, pid::bf16, TX>(lay, seed++) != 0;
  cases += 2;
}

// Rejected before any work: shift and scale of different dtypes, a tag that is no DType.
int check_unsupported() {
  float x[4] = {}, w[4] = {}, out[4] = {};
  pid::bf16 shift[4] = {};
  const pid::RowView xv{x, pid::DType::kFloat32, 4, 4};
  pid::NormModulateParams a{1, 1, 4, xv, w, {shift, pid::DType::kBFloat16, 4, 4}, xv, out, pid::DType::kFloat32, 1e-6f};
  int bad = pid_test::expect_unsupported("rms_norm_modulate_cpu, shift bfloat16 and scale float32",
                                         [&] { pid::rms_norm_modulate_cpu(a); });
  pid::GatedResidualParams g{1, 1, 4, xv, xv, xv, out, static_cast<pid::DType>(7)};
  bad += pid_test::expect_unsupported("gated_residual_cpu, out_dtype 7", [&] { pid::gated_residual_cpu(g); });
  return bad;
}

}  // namespace

int main() {
  // (B, L, D): odd sizes, the PiT pixel width 16 (its unrolled path), a few large rows.
  // {3, 777, 16} and {2, 19, 1536} are large enough for the OpenMP path (odd row counts split over threads).
  const std::int64_t shapes[][3] = {{1, 1, 1},  {1, 7, 3},   {2, 17, 16},   {3, 5, 33},
                                    {2, 40, 16}, {1, 9, 129}, {3, 777, 16}, {2, 19, 1536}};
  int failed = 0, cases = 0;
  unsigned seed = 1;
  for (const auto& sh : shapes) {
    for (const bool per_token : {false, true}) {
      const Layout lay{sh[0], sh[1], sh[2], per_token};
      norm_cases<float, float, float>(lay, seed, cases, failed);
      norm_cases<float, pid::bf16, float>(lay, seed, cases, failed);
      norm_cases<pid::bf16, pid::bf16, float>(lay, seed, cases, failed);
      norm_cases<float, pid::bf16, pid::bf16>(lay, seed, cases, failed);
      norm_cases<pid::bf16, float, pid::bf16>(lay, seed, cases, failed);
      gated_cases<float, float>(lay, seed, cases, failed);
      gated_cases<float, pid::bf16>(lay, seed, cases, failed);
      gated_cases<pid::bf16, pid::bf16>(lay, seed, cases, failed);
    }
  }
  failed += check_unsupported() != 0;
  ++cases;
  std::printf("norm_modulate_cpu: %d of %d cases passed\n", cases - failed, cases);
  return failed == 0 ? 0 : 1;
}
