// CUDA implementation of pid::rms_norm_modulate and pid::gated_residual (see pid/norm_modulate.h).
// Simple and correct first: a group of G lanes (G a power of two <= 32, chosen from D) owns one row;
// several rows share a warp when D is small (PiT: D = 16 -> 4 lanes per row, 8 rows per warp).
// Loads are 4 elements wide (float4 / 8-byte bf16x4) when every row start and D allow it.
// Arithmetic uses the __f*_rn intrinsics so nvcc cannot contract a*b+c into an FMA: each step is
// rounded like the PyTorch reference's separate kernels. rsqrt is rsqrtf, as in PyTorch's CUDA rsqrt.
#include "pid/norm_modulate.h"
#include "../norm_modulate_dtypes.h"
#include "load_store.cuh"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace pid {
namespace {

using nv_bf16 = __nv_bfloat16;

constexpr int kThreads = 256;

// V consecutive elements, loaded with one instruction when V == 4 (the caller guarantees alignment).
template <int V, typename T>
__device__ __forceinline__ void load_vec(const T* p, float (&v)[V]) {
  if constexpr (V == 4 && std::is_same_v<T, float>) {
    const float4 q = *reinterpret_cast<const float4*>(p);
    v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
  } else if constexpr (V == 4) {
    const uint2 q = *reinterpret_cast<const uint2*>(p);
    const __nv_bfloat162 lo = *reinterpret_cast<const __nv_bfloat162*>(&q.x);
    const __nv_bfloat162 hi = *reinterpret_cast<const __nv_bfloat162*>(&q.y);
    v[0] = __low2float(lo), v[1] = __high2float(lo), v[2] = __low2float(hi), v[3] = __high2float(hi);
  } else {
#pragma unroll
    for (int i = 0; i < V; ++i) v[i] = ld(p + i);
  }
}

template <int V, typename T>
__device__ __forceinline__ void store_vec(T* p, const float (&v)[V]) {
  if constexpr (V == 4 && std::is_same_v<T, float>) {
    *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
  } else if constexpr (V == 4) {
    const __nv_bfloat162 lo = __floats2bfloat162_rn(v[0], v[1]);
    const __nv_bfloat162 hi = __floats2bfloat162_rn(v[2], v[3]);
    uint2 q;
    q.x = *reinterpret_cast<const unsigned*>(&lo);
    q.y = *reinterpret_cast<const unsigned*>(&hi);
    *reinterpret_cast<uint2*>(p) = q;
  } else {
#pragma unroll
    for (int i = 0; i < V; ++i) st(p + i, v[i]);
  }
}

struct Rows {
  std::int64_t B, L, D;
};

// This lane's row and its index inside the row's group of G lanes. Rows past the end get row = -1
// but keep running (no early return) so that every lane of the warp reaches the shuffles.
template <int G>
__device__ __forceinline__ std::int64_t my_row(std::int64_t n_rows, int& lane) {
  lane = threadIdx.x % G;
  const std::int64_t row = (std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / G;
  return row < n_rows ? row : -1;
}

template <int G, int V, typename TX, typename TM, typename TO>
__global__ void __launch_bounds__(kThreads)
norm_modulate_kernel(const TX* __restrict__ x, std::int64_t xsb, std::int64_t xsl,
                     const float* __restrict__ w, const TM* __restrict__ shift, std::int64_t hsb,
                     std::int64_t hsl, const TM* __restrict__ scale, std::int64_t csb, std::int64_t csl,
                     TO* __restrict__ out, Rows r, float eps) {
  int lane;
  const std::int64_t row = my_row<G>(r.B * r.L, lane);
  const std::int64_t b = row < 0 ? 0 : row / r.L, l = row < 0 ? 0 : row % r.L;
  const std::int64_t D = row < 0 ? 0 : r.D;  // an idle lane loops zero times
  const TX* xr = x + b * xsb + l * xsl;

  float ss = 0.f;
  for (std::int64_t d = std::int64_t(lane) * V; d < D; d += std::int64_t(G) * V) {
    float v[V];
    load_vec<V>(xr + d, v);
#pragma unroll
    for (int i = 0; i < V; ++i) ss = __fadd_rn(ss, __fmul_rn(v[i], v[i]));
  }
#pragma unroll
  for (int o = G / 2; o > 0; o >>= 1) ss = __fadd_rn(ss, __shfl_xor_sync(0xffffffffu, ss, o));
  const float rs = rsqrtf(__fadd_rn(__fdiv_rn(ss, float(r.D)), eps));

  const TM* hr = shift + b * hsb + l * hsl;
  const TM* cr = scale + b * csb + l * csl;
  TO* orow = out + (row < 0 ? 0 : row) * r.D;
  for (std::int64_t d = std::int64_t(lane) * V; d < D; d += std::int64_t(G) * V) {
    float xv[V], hv[V], cv[V], wv[V], ov[V];
    load_vec<V>(xr + d, xv);
    load_vec<V>(hr + d, hv);
    load_vec<V>(cr + d, cv);
    load_vec<V>(w + d, wv);
#pragma unroll
    for (int i = 0; i < V; ++i) {
      const float n = round_to<TX>(__fmul_rn(xv[i], rs));         // normed.to(x.dtype)
      const float nw = __fmul_rn(wv[i], n);                        // weight * normed
      const float s1 = round_to<TM>(__fadd_rn(1.f, cv[i]));        // (1 + scale) in scale's dtype
      ov[i] = __fadd_rn(__fmul_rn(nw, s1), hv[i]);                 // * (1 + scale) + shift
    }
    store_vec<V>(orow + d, ov);
  }
}

template <int V, typename TX, typename TG, typename TY, typename TO>
__global__ void __launch_bounds__(kThreads)
gated_residual_kernel(const TX* __restrict__ x, std::int64_t xsb, std::int64_t xsl,
                      const TG* __restrict__ g, std::int64_t gsb, std::int64_t gsl,
                      const TY* __restrict__ y, std::int64_t ysb, std::int64_t ysl,
                      TO* __restrict__ out, Rows r) {
  constexpr bool kBf16Product = std::is_same_v<TG, nv_bf16> && std::is_same_v<TY, nv_bf16>;
  const std::int64_t per_row = r.D / V;  // V divides D
  const std::int64_t n = r.B * r.L * per_row;
  for (std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t row = i / per_row, d = (i % per_row) * V;
    const std::int64_t b = row / r.L, l = row % r.L;
    float xv[V], gv[V], yv[V], ov[V];
    load_vec<V>(x + b * xsb + l * xsl + d, xv);
    load_vec<V>(g + b * gsb + l * gsl + d, gv);
    load_vec<V>(y + b * ysb + l * ysl + d, yv);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      float p = __fmul_rn(gv[k], yv[k]);
      if constexpr (kBf16Product) p = round_to<nv_bf16>(p);
      ov[k] = __fadd_rn(xv[k], p);
    }
    store_vec<V>(out + row * r.D + d, ov);
  }
}

// ---- launch helpers -------------------------------------------------------------------------------

inline std::size_t elem_size(DType t) { return t == DType::kFloat32 ? 4 : 2; }

// True when 4-element vector accesses of every row of `v` are aligned (D is a multiple of 4).
inline bool vec4_ok(const RowView& v) {
  const std::size_t bytes = 4 * elem_size(v.dtype);
  return reinterpret_cast<std::uintptr_t>(v.data) % bytes == 0 && v.stride_b % 4 == 0 && v.stride_l % 4 == 0;
}
inline bool vec4_ok(const void* p, DType t) {
  return reinterpret_cast<std::uintptr_t>(p) % (4 * elem_size(t)) == 0;
}

// Lanes per row: enough for one V-wide access per lane per pass over a row, at most a warp.
inline int group_size(std::int64_t D, int V) {
  int g = 1;
  while (g < 32 && std::int64_t(g) * V < D) g *= 2;
  return g;
}

template <int G, int V, typename TX, typename TM, typename TO>
int launch_norm(const NormModulateParams& a, cudaStream_t stream) {
  const std::int64_t threads_total = a.B * a.L * G;
  const std::int64_t blocks = (threads_total + kThreads - 1) / kThreads;
  if (blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
  norm_modulate_kernel<G, V><<<unsigned(blocks), kThreads, 0, stream>>>(
      static_cast<const TX*>(a.x.data), a.x.stride_b, a.x.stride_l, a.weight,
      static_cast<const TM*>(a.shift.data), a.shift.stride_b, a.shift.stride_l,
      static_cast<const TM*>(a.scale.data), a.scale.stride_b, a.scale.stride_l,
      static_cast<TO*>(a.out), Rows{a.B, a.L, a.D}, a.eps);
  return cudaGetLastError();
}

template <int V, typename TX, typename TM, typename TO>
int launch_norm_with_group(const NormModulateParams& a, cudaStream_t stream) {
  switch (group_size(a.D, V)) {
    case 1: return launch_norm<1, V, TX, TM, TO>(a, stream);
    case 2: return launch_norm<2, V, TX, TM, TO>(a, stream);
    case 4: return launch_norm<4, V, TX, TM, TO>(a, stream);
    case 8: return launch_norm<8, V, TX, TM, TO>(a, stream);
    case 16: return launch_norm<16, V, TX, TM, TO>(a, stream);
    default: return launch_norm<32, V, TX, TM, TO>(a, stream);
  }
}

}  // namespace

int rms_norm_modulate_cuda(const NormModulateParams& a, void* stream) {
  constexpr const char* fn = "pid::rms_norm_modulate_cuda";
  check_norm_modulate_dtypes(fn, a);
  if (a.B * a.L == 0 || a.D == 0) return cudaSuccess;
  auto st = static_cast<cudaStream_t>(stream);
  const bool v4 = a.D % 4 == 0 && vec4_ok(a.x) && vec4_ok(a.shift) && vec4_ok(a.scale) &&
                  vec4_ok(a.weight, DType::kFloat32) && vec4_ok(a.out, a.out_dtype);
  return with_norm_modulate_dtypes<nv_bf16>(fn, a, [&](auto tx, auto tm, auto to) {
    using TX = decltype(tx);
    using TM = decltype(tm);
    using TO = decltype(to);
    return v4 ? launch_norm_with_group<4, TX, TM, TO>(a, st) : launch_norm_with_group<1, TX, TM, TO>(a, st);
  });
}

int gated_residual_cuda(const GatedResidualParams& a, void* stream) {
  if (a.B * a.L == 0 || a.D == 0) return cudaSuccess;
  auto st = static_cast<cudaStream_t>(stream);
  const bool v4 = a.D % 4 == 0 && vec4_ok(a.x) && vec4_ok(a.gate) && vec4_ok(a.y) && vec4_ok(a.out, a.out_dtype);
  const std::int64_t items = a.B * a.L * (v4 ? a.D / 4 : a.D);
  const std::int64_t blocks = std::min<std::int64_t>((items + kThreads - 1) / kThreads, 1 << 20);  // grid-stride beyond
  constexpr const char* fn = "pid::gated_residual_cuda";
  return with_gated_residual_dtypes<nv_bf16>(fn, a, [&](auto tx, auto tg, auto ty, auto to) -> int {
    using TX = decltype(tx);
    using TG = decltype(tg);
    using TY = decltype(ty);
    using TO = decltype(to);
    const auto* x = static_cast<const TX*>(a.x.data);
    const auto* g = static_cast<const TG*>(a.gate.data);
    const auto* y = static_cast<const TY*>(a.y.data);
    auto* out = static_cast<TO*>(a.out);
    const Rows r{a.B, a.L, a.D};
    if (v4)
      gated_residual_kernel<4><<<unsigned(blocks), kThreads, 0, st>>>(
          x, a.x.stride_b, a.x.stride_l, g, a.gate.stride_b, a.gate.stride_l, y, a.y.stride_b, a.y.stride_l, out, r);
    else
      gated_residual_kernel<1><<<unsigned(blocks), kThreads, 0, st>>>(
          x, a.x.stride_b, a.x.stride_l, g, a.gate.stride_b, a.gate.stride_l, y, a.y.stride_b, a.y.stride_l, out, r);
    return cudaGetLastError();
  });
}

}  // namespace pid
