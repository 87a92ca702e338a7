// Tensor-core per-channel sigma gate (G == D, the v1 gates): the logits x·W_xᵀ by mma.sync m16n8k16 with the
// gate fused into the epilogue, out = x + sigmoid(logit + lq_logit − alpha_b) ⊙ lq; no logit is ever written.
// The kernel behind pid::sigma_gate_cuda for G == D with bfloat16 lq, lq_logit and w_x (float32 weights use the
// CUDA-core kernel of sigma_gate.cu).
//
// Numerics as the op's contract (float32 math): bfloat16 operands make exact products in the tensor core, and
// every sum is float32. A float32 x is split exactly into three bfloat16 terms, x = hi + mid + lo (3 × 8
// significant bits = float32's 24), and each term is multiplied by W: three mma per fragment instead of one,
// still far ahead of float32 CUDA cores.
//
// One block of 4 warps (2 × 2) per tile of 64 tokens × 64 channels, 32 × 32 per warp (2 m-tiles × 4 n-tiles).
// k-tiles of 32 in shared memory, two stages: W's tile (and a bfloat16 x's) arrive by cp.async while the other
// stage is used; a float32 x is loaded into registers before the other stage's products and split and stored
// after them. Rows of 40 elements (80 bytes), so that the ldmatrix row addresses of a matrix fall in distinct
// banks.
//
// Written against the primitives of warp_mma.cuh, so that csrc/tests/test_sigma_gate_mma_emulated.cpp runs this
// very code on the CPU through csrc/tests/cuda_emulator.h.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "pid/sigma_gate.h"

#if defined(__CUDACC__)
#include "warp_mma.cuh"  // elsewhere the includer provides the primitives (csrc/tests/cuda_emulator.h)
#endif

namespace pid {
namespace mma_gate {

constexpr int kThreads = 128;
constexpr int kTileM = 64, kTileN = 64, kTileK = 32;  // tokens, channels, reduction per shared tile
constexpr int kStride = kTileK + 8;                    // shared row stride (elements)
constexpr int kMaxTilesY = 65535;                      // grid y (token tiles) per launch

// X: the type of x and out, float or bfloat16 as raw bits (std::uint16_t); lq, lq_logit, w are bfloat16 bits.
template <typename X>
constexpr int kTerms = sizeof(X) == 4 ? 3 : 1;  // bfloat16 terms per x value

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(std::uint16_t v) { return bf16_bits_to_float(v); }
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(std::uint16_t* p, float v) { *p = float_to_bf16_bits(v); }

struct Vectorised {  // whether x and w allow 16-byte loads (aligned base, rows a multiple of 16 bytes)
  bool x, w;
};

inline Vectorised vectorised(const void* x, int x_bytes, const void* w, std::int64_t D) {
  auto a16 = [](const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; };
  return Vectorised{a16(x) && (D * x_bytes) % 16 == 0, a16(w) && (D * 2) % 16 == 0};
}

// Eight bfloat16 values [col, col + 8) of row `row` of a [rows, D] matrix into shared memory, zeros outside it.
__device__ __forceinline__ void copy_chunk(std::uint16_t* dst, const std::uint16_t* m, std::int64_t rows,
                                           std::int64_t D, std::int64_t row, std::int64_t col, bool vec) {
  if (row >= rows || col >= D) {
    *reinterpret_cast<uint4*>(dst) = uint4{0u, 0u, 0u, 0u};
  } else if (vec) {  // D % 8 == 0: the chunk is whole
    cp_async_16(dst, m + row * D + col);
  } else {
    for (int i = 0; i < 8; ++i) dst[i] = col + i < D ? m[row * D + col + i] : std::uint16_t(0);
  }
}

struct alignas(8) Bf16x4 {
  std::uint16_t v[4];
};

// Four float32 values [col, col + 4) of row `row` of x into registers, zeros outside x.
__device__ __forceinline__ void fetch_quad(float (&v)[4], const float* x, std::int64_t rows, std::int64_t D,
                                           std::int64_t row, std::int64_t col, bool vec) {
  v[0] = v[1] = v[2] = v[3] = 0.f;
  if (row < rows && col < D) {
    if (vec) {  // D % 4 == 0: the chunk is whole
      const float4 f = *reinterpret_cast<const float4*>(x + row * D + col);
      v[0] = f.x, v[1] = f.y, v[2] = f.z, v[3] = f.w;
    } else {
      for (int i = 0; i < 4; ++i) v[i] = col + i < D ? x[row * D + col + i] : 0.f;
    }
  }
}

// Four float32 values, each split into hi + mid + lo, into the three term tiles.
__device__ __forceinline__ void store_split(std::uint16_t* const (&dst)[3], const float (&v)[4]) {
  Bf16x4 hi, mid, lo;
  for (int i = 0; i < 4; ++i) {
    hi.v[i] = float_to_bf16_bits(v[i]);
    const float r = v[i] - bf16_bits_to_float(hi.v[i]);  // exact: the bits below hi's 8
    mid.v[i] = float_to_bf16_bits(r);
    lo.v[i] = float_to_bf16_bits(r - bf16_bits_to_float(mid.v[i]));  // exact: at most 8 bits are left
  }
  *reinterpret_cast<Bf16x4*>(dst[0]) = hi;
  *reinterpret_cast<Bf16x4*>(dst[1]) = mid;
  *reinterpret_cast<Bf16x4*>(dst[2]) = lo;
}

// Token rows [row0, row0 + 64 gridDim.y) of M = B·L; grid x = channel tiles (neighbouring blocks share x's tile
// in L2), grid y = token tiles.
template <typename X>
__global__ void __launch_bounds__(kThreads)
    gate_kernel(const X* __restrict__ x, const std::uint16_t* __restrict__ lq,
                const std::uint16_t* __restrict__ lq_logit, const std::uint16_t* __restrict__ w,
                const float* __restrict__ alpha, X* __restrict__ out, SigmaGateSizes s, std::int64_t row0,
                Vectorised vec) {
  constexpr int T = kTerms<X>;
  alignas(16) __shared__ std::uint16_t xs[2][T][kTileM * kStride];
  alignas(16) __shared__ std::uint16_t ws[2][kTileN * kStride];

  const std::int64_t D = s.D, M = s.B * s.L;
  const std::int64_t m0 = row0 + std::int64_t(blockIdx.y) * kTileM, n0 = std::int64_t(blockIdx.x) * kTileN;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int wm = warp / 2, wn = warp % 2;  // the warp's 32 x 32 quarter of the tile

  // A float32 x goes through registers (to be split): the next k-tile's values are loaded before this one's
  // products and stored after them, so that their latency is hidden behind the mma. No-ops for a bfloat16 x.
  constexpr int kQuads = kTileK / 4;                           // 16-byte chunks of a float32 row
  constexpr int kQuadsPerThread = kTileM * kQuads / kThreads;  // 4
  static_assert(kTileM * kQuads % kThreads == 0, "whole chunks per thread");
  float xr[T == 3 ? kQuadsPerThread : 1][4];
  auto fetch_x = [&](std::int64_t kt) {
    if constexpr (T == 3) {
#pragma unroll
      for (int i = 0; i < kQuadsPerThread; ++i) {
        const int c = threadIdx.x + i * kThreads, r = c / kQuads, col = (c % kQuads) * 4;
        fetch_quad(xr[i], x, M, D, m0 + r, kt * kTileK + col, vec.x);
      }
    }
  };
  auto put_x = [&](int stage) {
    if constexpr (T == 3) {
#pragma unroll
      for (int i = 0; i < kQuadsPerThread; ++i) {
        const int c = threadIdx.x + i * kThreads, r = c / kQuads, col = (c % kQuads) * 4;
        std::uint16_t* const dst[3] = {xs[stage][0] + r * kStride + col, xs[stage][1] + r * kStride + col,
                                       xs[stage][2] + r * kStride + col};
        store_split(dst, xr[i]);
      }
    }
  };
  auto load = [&](std::int64_t kt, int stage) {  // one cp.async group per thread: W's tile, and a bfloat16 x's
    const std::int64_t k0 = kt * kTileK;
    constexpr int kChunks = kTileK / 8;  // 16-byte chunks of a bfloat16 row
    for (int c = threadIdx.x; c < kTileN * kChunks; c += kThreads) {
      const int r = c / kChunks, col = (c % kChunks) * 8;
      copy_chunk(ws[stage] + r * kStride + col, w, D, D, n0 + r, k0 + col, vec.w);
    }
    if constexpr (T == 1) {
      for (int c = threadIdx.x; c < kTileM * kChunks; c += kThreads) {
        const int r = c / kChunks, col = (c % kChunks) * 8;
        copy_chunk(xs[stage][0] + r * kStride + col, x, M, D, m0 + r, k0 + col, vec.x);
      }
    }
    cp_async_commit();
  };

  // ldmatrix addressing: lane 8i + j gives row j of the i-th 8x8 matrix of a 16x16 tile.
  const int m_lo = (lane / 8) % 2, m_hi = lane / 16, m_row = lane % 8;
  float acc[2][4][4] = {};  // [m-tile][n-tile][fragment element]
  const std::int64_t n_k = (D + kTileK - 1) / kTileK;
  load(0, 0);
  fetch_x(0);
  put_x(0);
  for (std::int64_t kt = 0; kt < n_k; ++kt) {
    const int stage = int(kt & 1);
    const bool next = kt + 1 < n_k;
    sync_block();  // every warp is done with the other stage
    if (next) {
      load(kt + 1, stage ^ 1);
      fetch_x(kt + 1);
      cp_async_wait<1>();  // this stage's copies have landed, the next one's may be in flight
    } else {
      cp_async_wait<0>();
    }
    sync_block();  // ... for every thread's copies and stores
#pragma unroll
    for (int kk = 0; kk < kTileK / 16; ++kk) {
      // B fragments of n-tiles (j, j + 1) x (k 0-7, 8-15) per ldmatrix.x4: W's rows are the channels.
      std::uint32_t b[4][4];
#pragma unroll
      for (int j = 0; j < 4; j += 2) {
        ldmatrix_x4(b[j], ws[stage] + (wn * 32 + (j + m_hi) * 8 + m_row) * kStride + kk * 16 + m_lo * 8);
        b[j + 1][0] = b[j][2], b[j + 1][1] = b[j][3];
      }
#pragma unroll
      for (int term = 0; term < T; ++term)
#pragma unroll
        for (int mi = 0; mi < 2; ++mi) {
          std::uint32_t a[4];  // (rows 0-7 | 8-15) x (k 0-7 | 8-15)
          ldmatrix_x4(a, xs[stage][term] + (wm * 32 + mi * 16 + m_lo * 8 + m_row) * kStride + kk * 16 + m_hi * 8);
#pragma unroll
          for (int ni = 0; ni < 4; ++ni) mma_bf16_m16n8k16(acc[mi][ni], a, b[ni][0], b[ni][1]);
        }
    }
    if (next) put_x(stage ^ 1);  // nobody reads that stage before the next iteration's barriers
  }

  // Epilogue: fragment element i of (mi, ni) is token row g + 8 (i >> 1), channel 2t + (i & 1) of its tile.
#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const std::int64_t row = m0 + wm * 32 + mi * 16 + g + 8 * e;
      if (row >= M) continue;
      const float a = alpha[row / s.L];
#pragma unroll
      for (int ni = 0; ni < 4; ++ni)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const std::int64_t col = n0 + wn * 32 + ni * 8 + 2 * t + c;
          if (col >= D) continue;
          const std::int64_t i = row * D + col;
          const float gate = 1.f / (1.f + expf(-(acc[mi][ni][2 * e + c] + bf16_bits_to_float(lq_logit[i]) - a)));
          store(out + i, to_float(x[i]) + gate * bf16_bits_to_float(lq[i]));
        }
    }
}

// The launches of one gate call: grid x = channel tiles, grid y = at most max_tiles token tiles (grid y's limit,
// kMaxTilesY), from token row0; calls launch(grid, row0) for each.
template <typename Launch>
inline void for_each_launch(std::int64_t M, std::int64_t D, std::int64_t max_tiles, Launch launch) {
  const std::int64_t tiles_m = (M + kTileM - 1) / kTileM;
  const unsigned tiles_n = unsigned((D + kTileN - 1) / kTileN);
  for (std::int64_t t0 = 0; t0 < tiles_m; t0 += max_tiles)
    launch(dim3{tiles_n, unsigned(std::min(max_tiles, tiles_m - t0)), 1u}, t0 * kTileM);
}

}  // namespace mma_gate
}  // namespace pid
