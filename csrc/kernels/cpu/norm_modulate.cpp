// CPU implementation of pid::rms_norm_modulate and pid::gated_residual (see pid/norm_modulate.h).
// OpenMP over rows; the per-row loops are `omp simd` so they vectorise. Compiled with
// -ffp-contract=off (CMakeLists.txt): every product and sum is rounded separately, as in the
// PyTorch reference, which runs each operation as its own kernel.
#include "pid/norm_modulate.h"

#include <bit>
#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace pid {
namespace {

constexpr std::int64_t kParallelMinWork = 1 << 15;  // elements; below this threads cost more than they save

inline float ld(const float* p) { return *p; }
inline float ld(const bf16* p) { return bf16_to_float(*p); }

// f rounded to the nearest bfloat16 (ties to even, NaN -> the canonical quiet NaN), as a float.
// Branch-free so that the loops around it vectorise; same result as float_to_bf16.
inline float round_bf16(float f) {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  return std::bit_cast<float>((u & 0x7fffffffu) > 0x7f800000u ? 0x7fc00000u : r);
}

// The value PyTorch stores when it casts float32 v to T.
template <typename T>
inline float round_to(float v) {
  if constexpr (std::is_same_v<T, bf16>)
    return round_bf16(v);
  else
    return v;
}

inline void st(float* p, float v) { *p = v; }
inline void st(bf16* p, float v) {
  p->bits = static_cast<std::uint16_t>(std::bit_cast<std::uint32_t>(round_bf16(v)) >> 16);
}

template <typename F>
void with_type(DType t, F&& f) {
  if (t == DType::kFloat32)
    f(float{});
  else
    f(bf16{});
}

// ---- rms_norm_modulate ----------------------------------------------------------------------------

// One row. kD > 0: the row length known at compile time (the PiT pixel width 16), else D.
template <typename TX, typename TM, typename TO, int kD>
inline void norm_modulate_row(const TX* __restrict__ x, const float* __restrict__ w,
                              const TM* __restrict__ shift, const TM* __restrict__ scale,
                              TO* __restrict__ out, std::int64_t D_runtime, float eps) {
  const std::int64_t D = kD > 0 ? kD : D_runtime;
  float ss = 0.f;
#pragma omp simd reduction(+ : ss)
  for (std::int64_t d = 0; d < D; ++d) {
    const float v = ld(x + d);
    ss += v * v;
  }
  // torch: mean = sum / D; rsqrt(v) = 1 / sqrt(v), each correctly rounded.
  const float r = 1.f / std::sqrt(ss / static_cast<float>(D) + eps);
#pragma omp simd
  for (std::int64_t d = 0; d < D; ++d) {
    const float n = round_to<TX>(ld(x + d) * r);           // normed.to(x.dtype)
    const float nw = w[d] * n;                             // weight * normed (float32)
    const float s1 = round_to<TM>(1.f + ld(scale + d));    // (1 + scale) in scale's dtype
    const float m = nw * s1;                               // promoted to float32
    st(out + d, m + ld(shift + d));
  }
}

template <typename TX, typename TM, typename TO, int kD>
void norm_modulate_rows(const NormModulateArgs& a) {
  const auto* x = static_cast<const TX*>(a.x.data);
  const auto* shift = static_cast<const TM*>(a.shift.data);
  const auto* scale = static_cast<const TM*>(a.scale.data);
  auto* out = static_cast<TO*>(a.out);
  const std::int64_t B = a.B, L = a.L, D = a.D;
#pragma omp parallel for collapse(2) schedule(static) if (B * L * D >= kParallelMinWork)
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t l = 0; l < L; ++l)
      norm_modulate_row<TX, TM, TO, kD>(x + b * a.x.stride_b + l * a.x.stride_l, a.weight,
                                        shift + b * a.shift.stride_b + l * a.shift.stride_l,
                                        scale + b * a.scale.stride_b + l * a.scale.stride_l,
                                        out + (b * L + l) * D, D, a.eps);
}

// ---- gated_residual -------------------------------------------------------------------------------

template <typename TX, typename TG, typename TY, typename TO, int kD>
inline void gated_row(const TX* __restrict__ x, const TG* __restrict__ g, const TY* __restrict__ y,
                      TO* __restrict__ out, std::int64_t D_runtime) {
  constexpr bool kBf16Product = std::is_same_v<TG, bf16> && std::is_same_v<TY, bf16>;
  const std::int64_t D = kD > 0 ? kD : D_runtime;
#pragma omp simd
  for (std::int64_t d = 0; d < D; ++d) {
    float p = ld(g + d) * ld(y + d);
    if constexpr (kBf16Product) p = round_bf16(p);
    st(out + d, ld(x + d) + p);
  }
}

template <typename TX, typename TG, typename TY, typename TO, int kD>
void gated_rows(const GatedResidualArgs& a) {
  const auto* x = static_cast<const TX*>(a.x.data);
  const auto* g = static_cast<const TG*>(a.gate.data);
  const auto* y = static_cast<const TY*>(a.y.data);
  auto* out = static_cast<TO*>(a.out);
  const std::int64_t B = a.B, L = a.L, D = a.D;
#pragma omp parallel for collapse(2) schedule(static) if (B * L * D >= kParallelMinWork)
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t l = 0; l < L; ++l)
      gated_row<TX, TG, TY, TO, kD>(x + b * a.x.stride_b + l * a.x.stride_l,
                                    g + b * a.gate.stride_b + l * a.gate.stride_l,
                                    y + b * a.y.stride_b + l * a.y.stride_l, out + (b * L + l) * D, D);
}

constexpr int kPixelWidth = 16;  // PiD's pixel_hidden_size: the PiT rows get a fully unrolled loop

}  // namespace

void rms_norm_modulate_cpu(const NormModulateArgs& a) {
  if (a.shift.dtype != a.scale.dtype)
    throw std::invalid_argument(std::string("pid::rms_norm_modulate_cpu: shift and scale must share a dtype, got ") +
                                dtype_name(a.shift.dtype) + " and " + dtype_name(a.scale.dtype));
  if (a.B * a.L == 0 || a.D == 0) return;
  with_type(a.x.dtype, [&](auto tx) {
    with_type(a.scale.dtype, [&](auto tm) {
      with_type(a.out_dtype, [&](auto to) {
        using TX = decltype(tx);
        using TM = decltype(tm);
        using TO = decltype(to);
        if (a.D == kPixelWidth)
          norm_modulate_rows<TX, TM, TO, kPixelWidth>(a);
        else
          norm_modulate_rows<TX, TM, TO, 0>(a);
      });
    });
  });
}

void gated_residual_cpu(const GatedResidualArgs& a) {
  if (a.B * a.L == 0 || a.D == 0) return;
  with_type(a.x.dtype, [&](auto tx) {
    with_type(a.gate.dtype, [&](auto tg) {
      with_type(a.y.dtype, [&](auto ty) {
        with_type(a.out_dtype, [&](auto to) {
          using TX = decltype(tx);
          using TG = decltype(tg);
          using TY = decltype(ty);
          using TO = decltype(to);
          if (a.D == kPixelWidth)
            gated_rows<TX, TG, TY, TO, kPixelWidth>(a);
          else
            gated_rows<TX, TG, TY, TO, 0>(a);
        });
      });
    });
  });
}

}  // namespace pid
