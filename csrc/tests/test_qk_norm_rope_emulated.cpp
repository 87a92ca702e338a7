// The CUDA bfloat16 qk_norm_rope kernel (csrc/kernels/cuda/qk_norm_rope_bf16.cuh) run on the CPU under
// cuda_emulator.h, against the CPU kernel (itself tested against double precision in test_attention.cpp).
// Both follow the same rounding steps; only the order of the mean of squares differs, so a value may be one
// bfloat16 rounding apart: the bound is 2^-6 (|o_2i| + |o_2i+1|) per rotated pair, and at least 99 % of the
// values must be bit-identical. Rows outside [offset, offset + N) must stay untouched.
#include "cuda_emulator.h"  // first: the CUDA keywords and warp primitives the kernel is written against

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "qk_norm_rope_bf16.cuh"

namespace {

using pid::bf16;
namespace kern = pid::qk_norm_rope_bf16;

constexpr std::uint16_t kSentinel = 0x7fc0;  // NaN: "not written"

template <typename Wt>
int check(long B, long N, long H, long D, bool rope, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  const long stride_n = 3 * H * D + 8;  // padded token rows: qkv is read through its strides
  std::vector<bf16> qkv(static_cast<std::size_t>(B * N * stride_n));
  for (auto& e : qkv) e = pid::float_to_bf16(normal(rng) * 2);
  std::vector<Wt> w(static_cast<std::size_t>(2 * D));
  for (auto& e : w) {
    const float f = 1 + 0.3f * normal(rng);
    if constexpr (sizeof(Wt) == 2) e = pid::float_to_bf16(f); else e = f;
  }
  std::vector<float> cs(static_cast<std::size_t>(N * D / 2)), sn(cs.size());
  for (long n = 0; n < N; ++n)
    for (long i = 0; i < D / 2; ++i) {
      const double ang = n * std::pow(100.0, -2.0 * i / D);
      cs[n * D / 2 + i] = float(std::cos(ang)), sn[n * D / 2 + i] = float(std::sin(ang));
    }
  const long rows = N + 3, q_off = 2, k_off = 1;
  pid::QkNormRopeParams p{};
  p.B = B, p.N = N, p.H = H, p.D = D;
  p.qkv = qkv.data();
  p.qkv_stride[0] = N * stride_n, p.qkv_stride[1] = stride_n, p.qkv_stride[2] = H * D, p.qkv_stride[3] = D;
  p.qkv_dtype = pid::DType::kBFloat16;
  p.q_weight = w.data(), p.k_weight = w.data() + D;
  p.weight_dtype = sizeof(Wt) == 2 ? pid::DType::kBFloat16 : pid::DType::kFloat32;
  p.cos = rope ? cs.data() : nullptr, p.sin = rope ? sn.data() : nullptr;
  p.eps = 1e-6f;
  p.q_rows = p.k_rows = rows, p.q_offset = q_off, p.k_offset = k_off;
  p.out_dtype = pid::DType::kBFloat16;

  const std::size_t n_out = static_cast<std::size_t>(B * H * rows * D);
  std::vector<bf16> want(2 * n_out, bf16{kSentinel}), got(2 * n_out, bf16{kSentinel});
  p.q_out = want.data(), p.k_out = want.data() + n_out;
  pid::qk_norm_rope_cpu(p);
  p.q_out = got.data(), p.k_out = got.data() + n_out;
  if (!kern::supports(p)) {
    std::fprintf(stderr, "  qk_norm_rope_bf16: case D=%ld not supported\n", D);
    return 1;
  }
  using WBits = std::conditional_t<sizeof(Wt) == 2, std::uint16_t, float>;
  const long warps = kern::warps(p);
  pid::emu::launch(dim3{unsigned((warps + kern::kWarps - 1) / kern::kWarps), 1, 1}, 32 * kern::kWarps,
                   [&] { kern::qk_norm_rope_kernel<WBits>(p); });

  int bad = 0;
  long same = 0, total = 0;
  for (std::size_t i = 0; i < 2 * n_out; i += 2) {
    const std::uint16_t gw[2] = {got[i].bits, got[i + 1].bits}, ww[2] = {want[i].bits, want[i + 1].bits};
    if (ww[0] == kSentinel) {  // outside the written rows (whole pairs: D is even)
      if ((gw[0] != kSentinel || gw[1] != kSentinel) && bad++ < 5)
        std::fprintf(stderr, "  qk_norm_rope_bf16 D=%ld: wrote outside its rows at %zu\n", D, i);
      continue;
    }
    const double a = pid::bf16_to_float(want[i]), b = pid::bf16_to_float(want[i + 1]);
    const double tol = 0x1p-6 * (std::fabs(a) + std::fabs(b));
    for (int e = 0; e < 2; ++e) {
      ++total;
      same += gw[e] == ww[e];
      const double g = pid::bf16_to_float(got[i + e]), x = e == 0 ? a : b;
      if (!(std::fabs(g - x) <= tol) && bad++ < 5)
        std::fprintf(stderr, "  qk_norm_rope_bf16 B=%ld N=%ld H=%ld D=%ld rope=%d at %zu: got %.9g want %.9g\n", B, N,
                     H, D, int(rope), i + e, g, x);
    }
  }
  if (same < 0.99 * double(total) && bad++ < 5)
    std::fprintf(stderr, "  qk_norm_rope_bf16 D=%ld: only %ld of %ld values bit-identical\n", D, same, total);
  return bad;
}

}  // namespace

int main() {
  int failed = 0, n = 0;
  unsigned seed = 1;
  const long shapes[][4] = {{1, 5, 3, 64}, {2, 7, 16, 72}, {1, 3, 24, 64},
                            {1, 4, 5, 8},  {1, 3, 2, 256},  {1, 2, 3, 136}};
  for (const auto& s : shapes)
    for (const bool rope : {true, false}) {
      failed += check<bf16>(s[0], s[1], s[2], s[3], rope, seed++) != 0;
      failed += check<float>(s[0], s[1], s[2], s[3], rope, seed++) != 0;
      n += 2;
    }
  std::printf("qk_norm_rope (CUDA bfloat16 kernel, emulated on the CPU): %d of %d cases passed\n", n - failed, n);
  return failed == 0 ? 0 : 1;
}
