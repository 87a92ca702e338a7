// Warp-level primitives of the tensor-core attention and the other warp-cooperative kernels, on a GPU.
// csrc/tests/cuda_emulator.h defines the same functions for the CPU, so that the kernels' own code is tested
// in CI (see attention_mma.cuh).
#pragma once

#include <cuda_bf16.h>
#include <cute/arch/copy_sm75.hpp>
#include <cute/arch/copy_sm80.hpp>
#include <cute/arch/mma_sm80.hpp>

#include <cstdint>

namespace pid {

__device__ __forceinline__ void sync_block() { __syncthreads(); }

__device__ __forceinline__ float shfl_xor(float v, int mask) { return __shfl_xor_sync(0xffffffffu, v, mask); }
__device__ __forceinline__ float shfl_idx(float v, int lane) { return __shfl_sync(0xffffffffu, v, lane); }

__device__ __forceinline__ float bf16_bits_to_float(std::uint16_t bits) {
  return __uint_as_float(std::uint32_t(bits) << 16);
}

__device__ __forceinline__ std::uint16_t float_to_bf16_bits(float f) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(f));
}

// Two values as a bfloat16x2 register: `lo` in the low 16 bits (the lower-indexed fragment element).
__device__ __forceinline__ std::uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const std::uint32_t*>(&v);
}

// c += A B for one 16x16 (A, row-major) by 16x8 (B, column-major) bfloat16 tile, float32 accumulators:
// mma.sync m16n8k16 through CuTe's SM80 atom (fragment layout in csrc/tests/cuda_emulator.h).
__device__ __forceinline__ void mma_bf16_m16n8k16(float (&c)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                                                  std::uint32_t b1) {
  cute::SM80_16x8x16_F32BF16BF16F32_TN::fma(c[0], c[1], c[2], c[3], a[0], a[1], a[2], a[3], b0, b1, c[0], c[1],
                                            c[2], c[3]);
}

// ldmatrix (.x2 / .x4, plain or .trans): lane 8i + j gives the address of row j (8 bfloat16, 16-byte aligned,
// shared memory) of the 8x8 matrix M_i; lane (g = lane / 4, t = lane % 4) receives r[i] = M_i[g][2t, 2t+1]
// (plain: an A or B fragment of a matrix stored with k contiguous) or M_i[2t, 2t+1][g] (.trans: a B fragment
// of a matrix stored with n contiguous). For .x2 the addresses of lanes 16-31 are not read (any valid one).
__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], const std::uint16_t* row) {
  cute::SM75_U32x4_LDSM_N::copy(*reinterpret_cast<const cute::uint128_t*>(row), r[0], r[1], r[2], r[3]);
}
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], const std::uint16_t* row) {
  cute::SM75_U16x8_LDSM_T::copy(*reinterpret_cast<const cute::uint128_t*>(row), r[0], r[1], r[2], r[3]);
}
__device__ __forceinline__ void ldmatrix_x2_trans(std::uint32_t (&r)[2], const std::uint16_t* row) {
  cute::SM75_U16x4_LDSM_T::copy(*reinterpret_cast<const cute::uint128_t*>(row), r[0], r[1]);
}

// cp.async of 16 bytes, global to shared memory (both 16-byte aligned), in the calling thread's current group;
// cp_async_commit closes the group, cp_async_wait<N> waits until at most N of its groups are in flight.
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem) {
  cute::SM80_CP_ASYNC_CACHEGLOBAL<cute::uint128_t>::copy(*static_cast<const cute::uint128_t*>(gmem),
                                                         *static_cast<cute::uint128_t*>(smem));
}
__device__ __forceinline__ void cp_async_commit() { cute::cp_async_fence(); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  cute::cp_async_wait<N>();
}

}  // namespace pid
