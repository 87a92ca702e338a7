// CPU implementation of pid::rms_norm_modulate and pid::gated_residual (see pid/norm_modulate.h).
// OpenMP over rows; the per-row loops are `omp simd` so they vectorise. Compiled with
// -ffp-contract=off (CMakeLists.txt): every product and sum is rounded separately, as in the
// PyTorch reference, which runs each operation as its own kernel.
#include "pid/norm_modulate.h"
#include "../norm_modulate_dtypes.h"
#include "load_store.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#ifdef _OPENMP
#include <omp.h>
#endif

// PID_CPU_NS: this file is compiled once per instruction-set variant (CMakeLists.txt), each into its own
// namespace; the public functions in namespace pid (isa_select.cpp) call the variant chosen at run time.
namespace pid::PID_CPU_NS {
namespace {

constexpr std::int64_t kParallelMinWork = 1 << 15;  // elements; below this threads cost more than they save

// Splits the rows r = b * L + l in [0, B*L) into one contiguous range per OpenMP thread and calls
// f(b, l, r, n) for each run of n <= `chunk` consecutive rows starting at row r = (b, l); f steps (b, l)
// itself, so there is one division per chunk rather than per row (PiT rows are only 16 elements).
template <typename F>
void for_row_chunks(std::int64_t B, std::int64_t L, std::int64_t D, std::int64_t chunk, F&& f) {
  const std::int64_t rows = B * L;
  const bool parallel = rows * D >= kParallelMinWork;
#pragma omp parallel if (parallel)
  {
#ifdef _OPENMP
    const std::int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
#else
    const std::int64_t nt = 1, t = 0;
#endif
    const std::int64_t begin = rows * t / nt, end = rows * (t + 1) / nt;
    for (std::int64_t r = begin; r < end; r += chunk) f(r / L, r % L, r, std::min(chunk, end - r));
  }
}

// Short rows read from a wide strided tensor (a chunk of the PiT modulation, 1 of 3 cache lines per row)
// defeat the hardware prefetcher: ask for the row kPrefetchRows ahead (same l stride). The address is
// formed as an integer: it may lie past the tensor, which a prefetch tolerates (it never faults).
constexpr std::int64_t kPrefetchRows = 16;
template <typename T>
inline void prefetch_ahead(const T* row, std::int64_t stride_l) {
  if (stride_l != 0) {
    const std::uintptr_t ahead = reinterpret_cast<std::uintptr_t>(row) +
                                 static_cast<std::uintptr_t>(kPrefetchRows * stride_l * std::int64_t(sizeof(T)));
    __builtin_prefetch(reinterpret_cast<const void*>(ahead), 0, 0);
  }
}

// ---- rms_norm_modulate ----------------------------------------------------------------------------

// 1 / sqrt(sum_sq / D + eps): torch's mean = sum / D, rsqrt(v) = 1 / sqrt(v), each correctly rounded.
inline float inv_rms(float sum_sq, float D, float eps) { return 1.f / std::sqrt(sum_sq / D + eps); }

template <typename TX, int kD>
inline float sum_squares(const TX* __restrict__ x, std::int64_t D_runtime) {
  if constexpr (kD > 0 && (kD & (kD - 1)) == 0) {
    // Short power-of-two rows: a pairwise tree (GCC reduces an omp simd reduction lane by lane, a
    // serial chain of kD dependent adds).
    float t[kD];
#pragma omp simd
    for (int d = 0; d < kD; ++d) {
      const float v = ld(x + d);
      t[d] = v * v;
    }
    for (int half = kD / 2; half > 0; half /= 2) {
#pragma omp simd
      for (int d = 0; d < half; ++d) t[d] += t[d + half];
    }
    return t[0];
  } else {
    const std::int64_t D = kD > 0 ? kD : D_runtime;
    float ss = 0.f;
#pragma omp simd reduction(+ : ss)
    for (std::int64_t d = 0; d < D; ++d) {
      const float v = ld(x + d);
      ss += v * v;
    }
    return ss;
  }
}

// The modulated row given its 1 / rms r.
template <typename TX, typename TM, typename TO, int kD>
inline void modulate_row(const TX* __restrict__ x, float r, const float* __restrict__ w,
                         const TM* __restrict__ shift, const TM* __restrict__ scale, TO* __restrict__ out,
                         std::int64_t D_runtime) {
  const std::int64_t D = kD > 0 ? kD : D_runtime;
#pragma omp simd
  for (std::int64_t d = 0; d < D; ++d) {
    const float n = round_to<TX>(ld(x + d) * r);         // normed.to(x.dtype)
    const float nw = w[d] * n;                           // weight * normed (float32)
    const float s1 = round_to<TM>(1.f + ld(scale + d));  // (1 + scale) in scale's dtype
    const float m = nw * s1;                             // promoted to float32
    st(out + d, m + ld(shift + d));
  }
}

// kD > 0: short rows of compile-time length (the PiT pixel width 16), kRowBlock rows at a time so that
// their square roots and divisions run as one vector. Else one row at a time (it stays in L1 between
// its two passes).
template <typename TX, typename TM, typename TO, int kD>
void norm_modulate_rows(const NormModulateParams& a) {
  const auto* x = static_cast<const TX*>(a.x.data);
  const auto* shift = static_cast<const TM*>(a.shift.data);
  const auto* scale = static_cast<const TM*>(a.scale.data);
  auto* out = static_cast<TO*>(a.out);
  const std::int64_t L = a.L, D = a.D;
  const float Df = static_cast<float>(D), eps = a.eps;
  constexpr std::int64_t kRowBlock = kD > 0 ? 16 : 1;
  for_row_chunks(a.B, L, D, kRowBlock, [&](std::int64_t b, std::int64_t l, std::int64_t r, std::int64_t n) {
    const TX* xr[kRowBlock];
    const TM* hr[kRowBlock];
    const TM* cr[kRowBlock];
    float inv[kRowBlock] = {};
    for (std::int64_t i = 0; i < n; ++i) {
      xr[i] = x + b * a.x.stride_b + l * a.x.stride_l;
      hr[i] = shift + b * a.shift.stride_b + l * a.shift.stride_l;
      cr[i] = scale + b * a.scale.stride_b + l * a.scale.stride_l;
      if constexpr (kD > 0) prefetch_ahead(cr[i], a.scale.stride_l), prefetch_ahead(hr[i], a.shift.stride_l);
      inv[i] = sum_squares<TX, kD>(xr[i], D);
      if (++l == L) l = 0, ++b;
    }
#pragma omp simd
    for (std::int64_t i = 0; i < kRowBlock; ++i) inv[i] = inv_rms(inv[i], Df, eps);
    for (std::int64_t i = 0; i < n; ++i)
      modulate_row<TX, TM, TO, kD>(xr[i], inv[i], a.weight, hr[i], cr[i], out + (r + i) * D, D);
  });
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
void gated_rows(const GatedResidualParams& a) {
  const auto* x = static_cast<const TX*>(a.x.data);
  const auto* g = static_cast<const TG*>(a.gate.data);
  const auto* y = static_cast<const TY*>(a.y.data);
  auto* out = static_cast<TO*>(a.out);
  const std::int64_t L = a.L, D = a.D;
  constexpr std::int64_t kRowBlock = 64;  // rows per call: amortises the (b, l) division
  for_row_chunks(a.B, L, D, kRowBlock, [&](std::int64_t b, std::int64_t l, std::int64_t r, std::int64_t n) {
    for (std::int64_t i = 0; i < n; ++i) {
      const TG* gr = g + b * a.gate.stride_b + l * a.gate.stride_l;
      if constexpr (kD > 0) prefetch_ahead(gr, a.gate.stride_l);
      gated_row<TX, TG, TY, TO, kD>(x + b * a.x.stride_b + l * a.x.stride_l, gr,
                                    y + b * a.y.stride_b + l * a.y.stride_l, out + (r + i) * D, D);
      if (++l == L) l = 0, ++b;
    }
  });
}

constexpr int kPixelWidth = 16;  // PiD's pixel_hidden_size: the PiT rows get a fully unrolled loop
constexpr int kSmallPixelWidth = 8;  // the small test networks' pixel width

}  // namespace

void rms_norm_modulate_cpu(const NormModulateParams& a) {
  constexpr const char* fn = "pid::rms_norm_modulate_cpu";
  check_norm_modulate_dtypes(fn, a);
  if (a.B * a.L == 0 || a.D == 0) return;
  with_norm_modulate_dtypes<bf16>(fn, a, [&](auto tx, auto tm, auto to) {
    using TX = decltype(tx);
    using TM = decltype(tm);
    using TO = decltype(to);
    if (a.D == kPixelWidth)
      norm_modulate_rows<TX, TM, TO, kPixelWidth>(a);
    else if (a.D == kSmallPixelWidth)
      norm_modulate_rows<TX, TM, TO, kSmallPixelWidth>(a);
    else
      norm_modulate_rows<TX, TM, TO, 0>(a);
  });
}

void gated_residual_cpu(const GatedResidualParams& a) {
  if (a.B * a.L == 0 || a.D == 0) return;
  with_gated_residual_dtypes<bf16>("pid::gated_residual_cpu", a, [&](auto tx, auto tg, auto ty, auto to) {
    using TX = decltype(tx);
    using TG = decltype(tg);
    using TY = decltype(ty);
    using TO = decltype(to);
    if (a.D == kPixelWidth)
      gated_rows<TX, TG, TY, TO, kPixelWidth>(a);
    else if (a.D == kSmallPixelWidth)
      gated_rows<TX, TG, TY, TO, kSmallPixelWidth>(a);
    else
      gated_rows<TX, TG, TY, TO, 0>(a);
  });
}

}  // namespace pid::PID_CPU_NS
