// CUDA implementation of pid::sigma_gate (see pid/sigma_gate.h). Per channel (G == D) with bfloat16 weights: the
// tensor-core kernel of sigma_gate_mma.cuh; per token, float32 weights and sigma_gate_apply: the kernels below.
#include "pid/sigma_gate.h"
#include "../sigma_gate_dtypes.h"
#include "load_store.cuh"
#include "sigma_gate_mma.cuh"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace pid {
namespace {

__device__ __forceinline__ float sigmoid(float z) { return 1.f / (1.f + expf(-z)); }

constexpr int kWarpsPerBlock = 4;
constexpr int kTile = 16;

// G == 1: one warp per token: warp-reduced dot product, then the gated residual.
// X: x's and out's type, P: that of lq, lq_logit and w (float / float, bf16 / bf16, float / bf16).
template <typename X, typename P>
__global__ void per_token_kernel(const X* x, const P* lq, const P* lq_logit, const P* w,
                                 const float* alpha, X* out, std::int64_t n_tok, std::int64_t L,
                                 std::int64_t D) {
  const std::int64_t t = std::int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (t >= n_tok) return;  // uniform per warp, so the full-mask shuffles below are safe
  const X* xt = x + t * D;
  const P* qt = lq + t * D;
  X* ot = out + t * D;
  float acc = 0.f;
  for (std::int64_t k = lane; k < D; k += 32) acc += ld(xt + k) * ld(w + k);
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  const float gate = sigmoid(acc + ld(lq_logit + t) - alpha[t / L]);
  for (std::int64_t d = lane; d < D; d += 32) st(ot + d, ld(xt + d) + gate * ld(qt + d));
}

// G == D, float32 weights: logits = x @ w^T by shared-memory tiles, the gated residual fused into the epilogue.
// Block (kTile x kTile threads) computes tokens [blockIdx.x * kTile, +kTile) x channels [blockIdx.y * kTile, +kTile).
template <typename X, typename P>
__global__ void per_dim_kernel(const X* x, const P* lq, const P* lq_logit, const P* w,
                               const float* alpha, X* out, std::int64_t n_tok, std::int64_t L,
                               std::int64_t D) {
  __shared__ float xs[kTile][kTile + 1];
  __shared__ float ws[kTile][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const std::int64_t t = std::int64_t(blockIdx.x) * kTile + ty;   // this thread's token
  const std::int64_t g = std::int64_t(blockIdx.y) * kTile + tx;   // this thread's channel
  const std::int64_t wr = std::int64_t(blockIdx.y) * kTile + ty;  // w row this thread loads
  float acc = 0.f;
  for (std::int64_t k0 = 0; k0 < D; k0 += kTile) {
    const std::int64_t k = k0 + tx;
    xs[ty][tx] = (t < n_tok && k < D) ? ld(x + t * D + k) : 0.f;
    ws[ty][tx] = (wr < D && k < D) ? ld(w + wr * D + k) : 0.f;
    __syncthreads();
#pragma unroll
    for (int j = 0; j < kTile; ++j) acc += xs[ty][j] * ws[tx][j];
    __syncthreads();
  }
  if (t < n_tok && g < D) {
    const std::int64_t i = t * D + g;
    const float gate = sigmoid(acc + ld(lq_logit + i) - alpha[t / L]);
    st(out + i, ld(x + i) + gate * ld(lq + i));
  }
}

const std::uint16_t* bits(const __nv_bfloat16* p) { return reinterpret_cast<const std::uint16_t*>(p); }
std::uint16_t* bits(__nv_bfloat16* p) { return reinterpret_cast<std::uint16_t*>(p); }
const float* bits(const float* p) { return p; }
float* bits(float* p) { return p; }

template <typename X>
int launch_mma(const X* x, const __nv_bfloat16* lq, const __nv_bfloat16* lq_logit, const __nv_bfloat16* w,
               const float* alpha, X* out, SigmaGateSizes s, cudaStream_t st) {
  const mma_gate::Vectorised vec = mma_gate::vectorised(x, int(sizeof(X)), w, s.D);
  if ((s.D + mma_gate::kTileN - 1) / mma_gate::kTileN > 0x7fffffff) return cudaErrorInvalidConfiguration;
  int err = cudaSuccess;
  mma_gate::for_each_launch(s.B * s.L, s.D, mma_gate::kMaxTilesY, [&](dim3 grid, std::int64_t row0) {
    if (err != cudaSuccess) return;
    mma_gate::gate_kernel<<<grid, mma_gate::kThreads, 0, st>>>(bits(x), bits(lq), bits(lq_logit), bits(w), alpha,
                                                               bits(out), s, row0, vec);
    err = cudaGetLastError();
  });
  return err;
}

template <typename X, typename P>
int launch(const X* x, const P* lq, const P* lq_logit, const P* w, const float* alpha, X* out,
           SigmaGateSizes s, void* stream) {
  const std::int64_t n_tok = s.B * s.L;
  if (n_tok == 0 || s.D == 0) return cudaSuccess;
  auto st = static_cast<cudaStream_t>(stream);
  if (s.G == 1) {
    const std::int64_t blocks = (n_tok + kWarpsPerBlock - 1) / kWarpsPerBlock;
    if (blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
    per_token_kernel<<<unsigned(blocks), kWarpsPerBlock * 32, 0, st>>>(x, lq, lq_logit, w, alpha, out,
                                                                      n_tok, s.L, s.D);
  } else if constexpr (std::is_same_v<P, __nv_bfloat16>) {
    return launch_mma(x, lq, lq_logit, w, alpha, out, s, st);
  } else {
    const std::int64_t bx = (n_tok + kTile - 1) / kTile, by = (s.D + kTile - 1) / kTile;
    if (bx > 0x7fffffff || by > 65535) return cudaErrorInvalidConfiguration;
    per_dim_kernel<<<dim3(unsigned(bx), unsigned(by)), dim3(kTile, kTile), 0, st>>>(
        x, lq, lq_logit, w, alpha, out, n_tok, s.L, s.D);
  }
  return cudaGetLastError();
}

// sigma_gate_apply: grid-stride over elements, kVec consecutive elements per step. The vector path
// (kVec = 4) needs D % 4 == 0 and aligned pointers, so a group of 4 never crosses a token.
constexpr int kApplyThreads = 256;
constexpr int kVec = 4;

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// T: x's and out's type, Q: lq's, Z: logit's.
template <int N, typename T, typename Q, typename Z>
__global__ void apply_kernel(const T* x, const Q* lq, const Z* logit, const float* alpha, T* out, std::int64_t n,
                             std::int64_t L, std::int64_t D, std::int64_t G) {
  const std::int64_t stride = std::int64_t(gridDim.x) * blockDim.x * N;
  for (std::int64_t i = (std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * N; i < n; i += stride) {
    const std::int64_t tok = i / D;
    const float a = alpha[tok / L];
    const Pack<T, N> xs = *reinterpret_cast<const Pack<T, N>*>(x + i);
    const Pack<Q, N> qs = *reinterpret_cast<const Pack<Q, N>*>(lq + i);
    Pack<T, N> os;
    if (G == 1) {
      const float gate = sigmoid(ld(logit + tok) - a);
#pragma unroll
      for (int k = 0; k < N; ++k) st(&os.v[k], ld(&xs.v[k]) + gate * ld(&qs.v[k]));
    } else {
      const Pack<Z, N> zs = *reinterpret_cast<const Pack<Z, N>*>(logit + i);
#pragma unroll
      for (int k = 0; k < N; ++k) st(&os.v[k], ld(&xs.v[k]) + sigmoid(ld(&zs.v[k]) - a) * ld(&qs.v[k]));
    }
    *reinterpret_cast<Pack<T, N>*>(out + i) = os;
  }
}

template <int N, typename T>
bool aligned(const T* p) {
  return reinterpret_cast<std::uintptr_t>(p) % (sizeof(T) * N) == 0;
}

template <typename T, typename Q, typename Z>
int apply_launch(const T* x, const Q* lq, const Z* logit, const float* alpha, T* out, SigmaGateSizes s,
                 void* stream) {
  const std::int64_t n = s.B * s.L * s.D;
  if (n == 0) return cudaSuccess;
  auto st = static_cast<cudaStream_t>(stream);
  const bool vec = s.D % kVec == 0 && aligned<kVec>(x) && aligned<kVec>(lq) && aligned<kVec>(out) &&
                   (s.G == 1 || aligned<kVec>(logit));
  const std::int64_t work = vec ? n / kVec : n;
  const unsigned blocks = unsigned(std::min<std::int64_t>((work + kApplyThreads - 1) / kApplyThreads, 1 << 16));
  if (vec)
    apply_kernel<kVec><<<blocks, kApplyThreads, 0, st>>>(x, lq, logit, alpha, out, n, s.L, s.D, s.G);
  else
    apply_kernel<1><<<blocks, kApplyThreads, 0, st>>>(x, lq, logit, alpha, out, n, s.L, s.D, s.G);
  return cudaGetLastError();
}

}  // namespace

int sigma_gate_apply_cuda(const SigmaGateApplyParams& p, void* stream) {
  return with_sigma_gate_apply_dtypes<__nv_bfloat16>("pid::sigma_gate_apply_cuda", p, [&](auto x, auto lq, auto logit) {
    using T = decltype(x);
    return apply_launch(static_cast<const T*>(p.x), static_cast<const decltype(lq)*>(p.lq),
                        static_cast<const decltype(logit)*>(p.logit), p.alpha_sigma, static_cast<T*>(p.out), p.sizes,
                        stream);
  });
}

int sigma_gate_cuda(const SigmaGateParams& p, void* stream) {
  return with_sigma_gate_dtypes<__nv_bfloat16>("pid::sigma_gate_cuda", p, [&](auto x, auto lq) {
    using X = decltype(x);
    using P = decltype(lq);
    return launch(static_cast<const X*>(p.x), static_cast<const P*>(p.lq), static_cast<const P*>(p.lq_logit),
                  static_cast<const P*>(p.w_x), p.alpha_sigma, static_cast<X*>(p.out), p.sizes, stream);
  });
}

}  // namespace pid
