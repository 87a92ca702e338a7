// pid::qk_norm_rope for bfloat16 qkv and outputs (the fast path's case), 16 bytes per lane: one warp per
// (b, n, q or k) walks the H heads of that token, G = d/8 lanes per head (d a multiple of 8, at most 256),
// 32/G heads at a time. A lane loads its 8 weights and its 4 cos/sin pairs once per token, not once per
// head; the mean of squares is summed over the head's G lanes. Numerics as pid/attention.h states them.
//
// Written against the primitives of warp_mma.cuh (shfl_idx, bf16 conversions), so that
// csrc/tests/test_qk_norm_rope_emulated.cpp runs this code on the CPU (csrc/tests/cuda_emulator.h).
#pragma once

#include <cstdint>

#include "../host_device.h"
#include "pid/attention.h"

#if defined(__CUDACC__)
#include "warp_mma.cuh"  // elsewhere the includer provides the primitives (csrc/tests/cuda_emulator.h)
#endif

namespace pid {
namespace qk_norm_rope_bf16 {

constexpr int kWarps = 4;  // per block

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(std::uint16_t bits) { return bf16_bits_to_float(bits); }
__device__ __forceinline__ float round_bf16(float v) { return bf16_bits_to_float(float_to_bf16_bits(v)); }

// Whether p suits the kernel: bfloat16 in and out, d % 8 == 0 and d <= 256, every qkv stride a multiple of 8
// and 16-byte aligned buffers (the tables: 16-byte aligned when given).
inline bool supports(const QkNormRopeParams& p) {
  auto aligned = [](const void* ptr) { return reinterpret_cast<std::uintptr_t>(ptr) % 16 == 0; };
  bool ok = p.qkv_dtype == DType::kBFloat16 && p.out_dtype == DType::kBFloat16 && p.D % 8 == 0 && p.D <= 256 &&
            aligned(p.qkv) && (p.q_out == nullptr || aligned(p.q_out)) && (p.k_out == nullptr || aligned(p.k_out)) &&
            (p.cos == nullptr || (aligned(p.cos) && aligned(p.sin)));
  for (int i = 0; i < 4; ++i) ok = ok && p.qkv_stride[i] % 8 == 0;
  return ok;
}

PID_HOST_DEVICE inline std::int64_t warps(const QkNormRopeParams& p) { return p.B * p.N * 2; }

// Wt: float or std::uint16_t (bfloat16 bits), the weights' type.
template <typename Wt>
__global__ void __launch_bounds__(32 * kWarps) qk_norm_rope_kernel(QkNormRopeParams p) {
  const std::int64_t warp = std::int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (warp >= warps(p)) return;  // uniform per warp
  const int lane = threadIdx.x % 32;
  const std::int64_t which = warp % 2, n = (warp / 2) % p.N, b = warp / (2 * p.N);
  std::uint16_t* out = static_cast<std::uint16_t*>(which == 0 ? p.q_out : p.k_out);
  if (out == nullptr) return;
  const int G = int(p.D / 8), heads = 32 / G;  // lanes per head, heads per pass
  const int c = lane % G, slot = lane / G;     // this lane's 8 values: [8c, 8c + 8) of head h0 + slot
  const int group = slot * G;                  // first lane of this lane's head
  constexpr bool kRoundProduct = sizeof(Wt) == 2;  // the weight's product is bfloat16 iff the weight is

  const Wt* w = static_cast<const Wt*>(which == 0 ? p.q_weight : p.k_weight) + 8 * c;
  float wt[8], cs[4] = {}, sn[4] = {};
  for (int e = 0; e < 8; ++e) wt[e] = to_float(w[e]);
  const std::int64_t half = p.D / 2;
  if (p.cos != nullptr)
    for (int i = 0; i < 4; ++i) cs[i] = p.cos[n * half + 4 * c + i], sn[i] = p.sin[n * half + 4 * c + i];
  const std::uint16_t* x0 = static_cast<const std::uint16_t*>(p.qkv) + b * p.qkv_stride[0] + n * p.qkv_stride[1] +
                            which * p.qkv_stride[2] + 8 * c;
  const std::int64_t rows = which == 0 ? p.q_rows : p.k_rows, offset = which == 0 ? p.q_offset : p.k_offset;

  for (std::int64_t h0 = 0; h0 < p.H; h0 += heads) {
    const std::int64_t h = h0 + slot;
    const bool active = slot < heads && h < p.H;
    uint4 raw{0u, 0u, 0u, 0u};
    if (active) raw = *reinterpret_cast<const uint4*>(x0 + h * p.qkv_stride[3]);
    const std::uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
    float x[8];
    for (int i = 0; i < 4; ++i) {
      x[2 * i] = bf16_bits_to_float(std::uint16_t(words[i] & 0xffffu));
      x[2 * i + 1] = bf16_bits_to_float(std::uint16_t(words[i] >> 16));
    }
    float ss = 0.f;
    for (int e = 0; e < 8; ++e) ss += x[e] * x[e];
    float total = 0.f;  // over the head's G lanes (every lane takes part in the shuffles)
    for (int j = 0; j < G; ++j) total += shfl_idx(ss, group + j < 32 ? group + j : 0);
    if (!active) continue;
    const float inv = 1.f / sqrtf(total / float(p.D) + p.eps);
    std::uint32_t packed[4];
    for (int i = 0; i < 4; ++i) {
      float y[2];
      for (int e = 0; e < 2; ++e) {
        const float r = round_bf16(x[2 * i + e] * inv);  // RMSNorm: cast to the input dtype
        const float prod = wt[2 * i + e] * r;
        y[e] = kRoundProduct ? round_bf16(prod) : prod;
      }
      if (p.cos != nullptr) {
        const float r0 = y[0] * cs[i] - y[1] * sn[i], r1 = y[0] * sn[i] + y[1] * cs[i];
        y[0] = r0, y[1] = r1;
      }
      // Rounded to the promoted dtype (bfloat16 when the weights are), then to the bfloat16 output: once.
      packed[i] = std::uint32_t(float_to_bf16_bits(y[0])) | std::uint32_t(float_to_bf16_bits(y[1])) << 16;
    }
    std::uint16_t* dst = out + ((b * p.H + h) * rows + offset + n) * p.D + 8 * c;
    *reinterpret_cast<uint4*>(dst) = uint4{packed[0], packed[1], packed[2], packed[3]};
  }
}

}  // namespace qk_norm_rope_bf16
}  // namespace pid
