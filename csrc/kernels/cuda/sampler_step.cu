// CUDA implementation of the sampler step kernels (see pid/sampler_step.h).
//
// Grid-stride loops over groups of kVec = 4 elements (one 16-byte load per float32 array, 8 bytes
// for bfloat16) when every pointer is aligned for it, else over single elements. Every operation is
// an explicitly rounded intrinsic (__fmul_rn, __fadd_rn, __dmul_rn, ...): nvcc would otherwise
// contract a·b + c into an FMA, which rounds once instead of twice and breaks bit-equality with
// PyTorch's eager kernels. Division is IEEE (__fdiv_rn), as PyTorch's true division by a tensor.
#include "pid/sampler_step.h"
#include "../sampler_step_dtypes.h"
#include "load_store.cuh"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace pid {
namespace {

constexpr int kThreads = 256;
constexpr int kVec = 4;
constexpr std::int64_t kMaxBlocks = 1 << 16;  // grid-stride beyond this

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
struct alignas(sizeof(T) * kVec) Pack {
  T v[kVec];
};

// Loads kVec (or 1) elements starting at p[i] into float32 registers.
template <int N, typename T>
__device__ __forceinline__ void load(const T* p, std::int64_t i, float (&out)[N]) {
  if constexpr (N == kVec) {
    const Pack<T> pk = *reinterpret_cast<const Pack<T>*>(p + i);
#pragma unroll
    for (int k = 0; k < N; ++k) out[k] = to_f32(pk.v[k]);
  } else {
    out[0] = to_f32(p[i]);
  }
}

template <int N>
__device__ __forceinline__ void store(float* p, std::int64_t i, const float (&in)[N]) {
  if constexpr (N == kVec) {
    Pack<float> pk;
#pragma unroll
    for (int k = 0; k < N; ++k) pk.v[k] = in[k];
    *reinterpret_cast<Pack<float>*>(p + i) = pk;
  } else {
    p[i] = in[0];
  }
}

// ---- student ---------------------------------------------------------------------------------------
template <int N, typename V>
__device__ __forceinline__ void student_group(const float* x, const V* v, const float* eps, double t, float t_next,
                                              float c, float* x_next, float* x0_out, std::int64_t i) {
  float xs[N], vs[N], x0[N], xn[N];
  load<N>(x, i, xs);
  load<N>(v, i, vs);
#pragma unroll
  for (int k = 0; k < N; ++k) x0[k] = __double2float_rn(__dsub_rn(double(xs[k]), __dmul_rn(t, double(vs[k]))));
  if (x0_out) store<N>(x0_out, i, x0);
  if (eps) {
    float es[N];
    load<N>(eps, i, es);
#pragma unroll
    for (int k = 0; k < N; ++k) xn[k] = __fadd_rn(__fmul_rn(c, x0[k]), __fmul_rn(t_next, es[k]));
    store<N>(x_next, i, xn);
  } else {
    store<N>(x_next, i, x0);
  }
}

template <int N, typename V>
__global__ void student_kernel(const float* x, const V* v, const float* eps, float t, float t_next, float* x_next,
                               float* x0_out, std::int64_t n) {
  const double td = t;
  const float c = __fsub_rn(1.0f, t_next);
  const std::int64_t stride = std::int64_t(gridDim.x) * blockDim.x;
  const std::int64_t groups = n / N;
  for (std::int64_t g = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; g < groups; g += stride)
    student_group<N>(x, v, eps, td, t_next, c, x_next, x0_out, g * N);
  if (N > 1 && blockIdx.x == 0 && threadIdx.x < n - groups * N)  // the < kVec trailing elements
    student_group<1>(x, v, eps, td, t_next, c, x_next, x0_out, groups * N + threadIdx.x);
}

// ---- DPM-Solver++(2M) ------------------------------------------------------------------------------
template <int N, typename V>
__device__ __forceinline__ void dpm_group(const float* x, const V* v_c, const V* v_u, const float* d_prev,
                                          const DpmStepCoeffs& k, float u, float* x_next, float* d,
                                          std::int64_t i) {
  float xs[N], vs[N], ds[N];
  load<N>(x, i, xs);
  load<N>(v_c, i, vs);
  if (v_u) {
    float us[N];
    load<N>(v_u, i, us);
#pragma unroll
    for (int j = 0; j < N; ++j) vs[j] = __fadd_rn(us[j], __fmul_rn(k.guidance, __fsub_rn(vs[j], us[j])));
  }
#pragma unroll
  for (int j = 0; j < N; ++j) {
    const float e = __fadd_rn(__fmul_rn(u, vs[j]), xs[j]);
    ds[j] = __fdiv_rn(__fsub_rn(xs[j], __fmul_rn(k.t, e)), u);
  }
  store<N>(d, i, ds);
  if (x_next) {
    float xn[N];
#pragma unroll
    for (int j = 0; j < N; ++j) xn[j] = __fsub_rn(__fmul_rn(k.t_ratio, xs[j]), __fmul_rn(k.alpha_phi, ds[j]));
    if (d_prev) {
      float ps[N];
      load<N>(d_prev, i, ps);
#pragma unroll
      for (int j = 0; j < N; ++j)
        xn[j] = __fsub_rn(xn[j], __fmul_rn(k.half_alpha_phi, __fmul_rn(k.inv_r, __fsub_rn(ds[j], ps[j]))));
    }
    store<N>(x_next, i, xn);
  }
}

template <int N, typename V>
__global__ void dpm_kernel(const float* x, const V* v_c, const V* v_u, const float* d_prev, DpmStepCoeffs k,
                           float* x_next, float* d, std::int64_t n) {
  const float u = __fsub_rn(1.0f, k.t);
  const std::int64_t stride = std::int64_t(gridDim.x) * blockDim.x;
  const std::int64_t groups = n / N;
  for (std::int64_t g = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; g < groups; g += stride)
    dpm_group<N>(x, v_c, v_u, d_prev, k, u, x_next, d, g * N);
  if (N > 1 && blockIdx.x == 0 && threadIdx.x < n - groups * N)
    dpm_group<1>(x, v_c, v_u, d_prev, k, u, x_next, d, groups * N + threadIdx.x);
}

// ---- launch ----------------------------------------------------------------------------------------
template <typename T>
bool aligned(const T* p) {
  return p == nullptr || reinterpret_cast<std::uintptr_t>(p) % (sizeof(T) * kVec) == 0;
}

unsigned blocks_for(std::int64_t work) {
  return unsigned(std::clamp<std::int64_t>((work + kThreads - 1) / kThreads, 1, kMaxBlocks));
}

template <typename V>
int student_launch(const float* x, const V* v, const float* eps, float t, float t_next, float* x_next,
                   float* x0_out, std::int64_t n, void* stream) {
  if (n <= 0) return cudaSuccess;
  auto st = static_cast<cudaStream_t>(stream);
  if (aligned(x) && aligned(v) && aligned(eps) && aligned(x_next) && aligned(x0_out))
    student_kernel<kVec><<<blocks_for(n / kVec), kThreads, 0, st>>>(x, v, eps, t, t_next, x_next, x0_out, n);
  else
    student_kernel<1><<<blocks_for(n), kThreads, 0, st>>>(x, v, eps, t, t_next, x_next, x0_out, n);
  return cudaGetLastError();
}

template <typename V>
int dpm_launch(const float* x, const V* v_c, const V* v_u, const float* d_prev, DpmStepCoeffs k, float* x_next,
               float* d, std::int64_t n, void* stream) {
  if (n <= 0) return cudaSuccess;
  auto st = static_cast<cudaStream_t>(stream);
  if (aligned(x) && aligned(v_c) && aligned(v_u) && aligned(d_prev) && aligned(x_next) && aligned(d))
    dpm_kernel<kVec><<<blocks_for(n / kVec), kThreads, 0, st>>>(x, v_c, v_u, d_prev, k, x_next, d, n);
  else
    dpm_kernel<1><<<blocks_for(n), kThreads, 0, st>>>(x, v_c, v_u, d_prev, k, x_next, d, n);
  return cudaGetLastError();
}

}  // namespace

int student_step_cuda(const StudentStepParams& p, void* stream) {
  return with_sampler_step_dtypes<__nv_bfloat16>("pid::student_step_cuda", p, [&](auto v) {
    return student_launch(p.x, static_cast<const decltype(v)*>(p.v), p.eps, p.t, p.t_next, p.x_next, p.x0_out, p.n,
                          stream);
  });
}

int dpm_step_cuda(const DpmStepParams& p, void* stream) {
  return with_sampler_step_dtypes<__nv_bfloat16>("pid::dpm_step_cuda", p, [&](auto v) {
    using V = decltype(v);
    return dpm_launch(p.x, static_cast<const V*>(p.v_c), static_cast<const V*>(p.v_u), p.d_prev, p.coeffs, p.x_next,
                      p.d, p.n, stream);
  });
}

}  // namespace pid
