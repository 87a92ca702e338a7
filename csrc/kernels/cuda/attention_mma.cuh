// Tensor-core flash attention (mma.sync m16n8k16, sm_80 and later) for bfloat16 q, k, v with head_dim 64 or
// 72: the kernel behind pid::attention_cuda for bfloat16 (float32 inputs use the CUDA-core kernel).
//
// One block of 4 warps per tile of 64 query rows, 16 rows per warp. Key tiles of 64 keys are staged in
// shared memory, two stages (the next tile is copied with cp.async while this one is used); K and V are
// row-major, every operand fragment comes out of ldmatrix (V's transposed). The scores, the online softmax
// (base 2) and the output accumulators all stay in registers in the mma fragment layout.
// head_dim 72 is zero-padded to 80 in shared memory for q.k (5 k-steps of 16) and is 9 n-tiles of 8 for
// p.v: nothing is padded in global memory. The softmax weights are rounded to bfloat16 for p.v (as flash
// attention and torch SDPA do); their sum and every accumulation stay float32. Windowed attention uses the
// same 64-row tiling as the CUDA-core kernel (window_tiling, image_tile: ../attention_tiling.h), masked per query.
//
// Written against the primitives of warp_mma.cuh (sync_block, shfl_xor, mma_bf16_m16n8k16, ldmatrix_*,
// cp_async_*, bf16 conversions), so that csrc/tests/test_attention_mma_emulated.cpp runs this very code on the
// CPU through csrc/tests/cuda_emulator.h.
#pragma once

#include <cmath>
#include <cstdint>

#include "../attention_tiling.h"
#include "pid/attention.h"

#if defined(__CUDACC__)
#include "warp_mma.cuh"  // elsewhere the includer provides the primitives (csrc/tests/cuda_emulator.h)
#endif

namespace pid {
namespace mma_attention {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kRows = 16 * kWarps;  // query rows per block
constexpr int kKeys = 64;           // keys per shared-memory tile

struct Vectorised {  // whether q, k, v allow 16-byte loads (aligned base, every stride a multiple of 8)
  bool q, k, v;
};

// One 16-byte chunk of a tile row: the 8 values [col, col + 8) of global row `row` of `base`, or zeros where
// row < 0 or col >= D (the padding of q.k). `async`: through cp.async (the caller commits and waits).
template <int D>
__device__ __forceinline__ void copy_chunk(std::uint16_t* dst, const std::uint16_t* base, std::int64_t stride,
                                           std::int64_t row, int col, bool vec, bool async) {
  if (row < 0 || col >= D) {
    *reinterpret_cast<uint4*>(dst) = uint4{0u, 0u, 0u, 0u};
  } else if (vec && async) {
    cp_async_16(dst, base + row * stride + col);
  } else if (vec) {
    *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(base + row * stride + col);
  } else {
    for (int i = 0; i < 8; ++i) dst[i] = base[row * stride + col + i];
  }
}

template <int D>
__global__ void __launch_bounds__(kThreads)
    attention_kernel(const std::uint16_t* __restrict__ q, const std::uint16_t* __restrict__ k,
                     const std::uint16_t* __restrict__ v, std::uint16_t* __restrict__ o, AttentionParams p,
                     WindowTiling wt, Vectorised vec) {
  static_assert(D % 8 == 0 && kRows == kKeys, "head_dim must be a multiple of 8");
  constexpr int DK = (D + 15) / 16 * 16;  // q.k reduction length, zero-padded
  constexpr int S = DK + 8;               // shared row stride (elements): conflict-free fragment loads
  constexpr int kDimTiles = D / 8;        // n-tiles of the output
  // Two stages of K and V tiles: the next tile is copied (cp.async) while this one is used. The queries are
  // staged once in stage 1's K tile, before its first use.
  alignas(16) __shared__ std::uint16_t kv[2][2][kKeys * S];
  __shared__ int key_r[2][kKeys];  // grid row and column of an image key under a window, -1: seen by all
  __shared__ int key_c[2][kKeys];

  const std::int64_t b = blockIdx.y / p.H, h = blockIdx.y % p.H, tile = blockIdx.x;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;

  // This tile's queries and keys (as in attention.cu's CUDA-core kernel): keys e < n_plain are key rows seen
  // by every query, the rest walk the key rectangle of an image block.
  const bool image = p.window > 0 && tile >= wt.text_tiles;
  ImageTile it{};
  std::int64_t n_plain = p.Sk, n_keys = p.Sk;
  if (image) {
    it = image_tile(p, wt, tile - wt.text_tiles);
    n_plain = p.n_text;
    n_keys = p.n_text + it.rh * it.cw;
  }
  auto query_row = [&](int r) -> std::int64_t {
    if (!image) {
      const std::int64_t rows = p.window > 0 ? wt.n_text_q : p.Sq, row = tile * kRows + r;
      return row < rows ? row : -1;
    }
    if (r >= it.h * it.w) return -1;
    return wt.n_text_q + (it.i0 + r / it.w) * p.grid_w + it.j0 + r % it.w;
  };
  // The windows of this thread's two rows (fragment rows g and g + 8 of its warp).
  int rlo[2] = {0, 0}, rhi[2] = {0, 0}, clo[2] = {0, 0}, chi[2] = {0, 0};
  if (image) {
    for (int e = 0; e < 2; ++e) {
      const int r = warp * 16 + g + 8 * e;
      if (r >= it.h * it.w) continue;
      const std::int64_t i = it.i0 + r / it.w, j = it.j0 + r % it.w;
      rlo[e] = int(window_start(i, p.window, p.grid_h));
      rhi[e] = rlo[e] + int(window_len(p.window, p.grid_h));
      clo[e] = int(window_start(j, p.window, p.grid_w));
      chi[e] = clo[e] + int(window_len(p.window, p.grid_w));
    }
  }

  // Key tile `index`: its keys [e0, e0 + nk) of the enumeration, their rows, and their grid coordinates.
  const std::uint16_t* kb = k + b * p.k_stride.b + h * p.k_stride.h;
  const std::uint16_t* vb = v + b * p.v_stride.b + h * p.v_stride.h;
  auto tile_keys = [&](std::int64_t index) -> int {
    const std::int64_t e0 = index * kKeys;
    return int(n_keys - e0 < kKeys ? n_keys - e0 : kKeys);
  };
  auto key_row = [&](std::int64_t index, int j, int* kr, int* kc) -> std::int64_t {
    *kr = -1, *kc = 0;
    if (j >= tile_keys(index)) return -1;
    const std::int64_t e = index * kKeys + j;
    if (e < n_plain) return e;
    const int r = int(e - n_plain), cw = int(it.cw);  // 32-bit division: a key rectangle is far below 2^31
    *kr = int(it.r0) + r / cw, *kc = int(it.c0) + r % cw;
    return p.n_text + std::int64_t(*kr) * p.grid_w + *kc;
  };
  // Tiles are copied in 16-byte chunks, consecutive threads taking consecutive chunks of a row (coalesced).
  constexpr int kChunks = DK / 8;
  auto prefetch = [&](std::int64_t index, int stage) {  // one cp.async group per thread
    if (threadIdx.x < kKeys) key_row(index, threadIdx.x, &key_r[stage][threadIdx.x], &key_c[stage][threadIdx.x]);
    for (int c = threadIdx.x; c < kKeys * kChunks; c += kThreads) {
      const int r = c / kChunks, col = (c % kChunks) * 8;
      int kr, kc;
      const std::int64_t key = key_row(index, r, &kr, &kc);  // absent keys: zero rows, so 0 * v stays finite
      copy_chunk<D>(kv[stage][0] + r * S + col, kb, p.k_stride.s, key, col, vec.k, true);
      copy_chunk<D>(kv[stage][1] + r * S + col, vb, p.v_stride.s, key, col, vec.v, true);
    }
    cp_async_commit();
  };

  const std::int64_t n_tiles = (n_keys + kKeys - 1) / kKeys;
  prefetch(0, 0);
  // Queries: through stage 1's K tile into registers, as each warp's 16 rows of A fragments.
  for (int c = threadIdx.x; c < kRows * kChunks; c += kThreads) {
    const int r = c / kChunks, col = (c % kChunks) * 8;
    copy_chunk<D>(kv[1][0] + r * S + col, q + b * p.q_stride.b + h * p.q_stride.h, p.q_stride.s, query_row(r), col,
                  vec.q, false);
  }
  sync_block();
  // ldmatrix addressing: lane 8m + i gives row i of the m-th 8x8 matrix of a 16x16 tile.
  const int m_lo = (lane / 8) % 2, m_hi = lane / 16, m_row = lane % 8;
  std::uint32_t qa[DK / 16][4];  // A fragments: (rows 0-7 | 8-15) x (columns 0-7 | 8-15) of k-step kk
  for (int kk = 0; kk < DK / 16; ++kk)
    ldmatrix_x4(qa[kk], kv[1][0] + (warp * 16 + m_lo * 8 + m_row) * S + kk * 16 + m_hi * 8);

  const float scale = p.scale * 1.4426950408889634f;  // scores in base 2
  float acc[kDimTiles][4] = {};
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};  // running max (base 2) and this thread's partial sum

  for (std::int64_t index = 0; index < n_tiles; ++index) {
    const int stage = int(index & 1), nk = tile_keys(index);
    sync_block();  // every warp is done with the other stage (the previous tile, or the queries)
    if (index + 1 < n_tiles) {
      prefetch(index + 1, stage ^ 1);
      cp_async_wait<1>();  // this tile's copies have landed, the next tile's may still be in flight
    } else {
      cp_async_wait<0>();
    }
    sync_block();  // ... for every thread's copies
    const std::uint16_t* ks = kv[stage][0];
    const std::uint16_t* vs = kv[stage][1];

    // Scores of the warp's 16 rows against the 64 keys: 8 n-tiles of 8 keys, B fragments of two n-tiles
    // (keys j, j + 1 x columns 0-7, 8-15 of k-step kk) per ldmatrix.x4.
    float s[kKeys / 8][4] = {};
    for (int kk = 0; kk < DK / 16; ++kk)
      for (int j = 0; j < kKeys / 8; j += 2) {
        std::uint32_t kf[4];
        ldmatrix_x4(kf, ks + ((j + m_hi) * 8 + m_row) * S + kk * 16 + m_lo * 8);
        mma_bf16_m16n8k16(s[j], qa[kk], kf[0], kf[1]);
        mma_bf16_m16n8k16(s[j + 1], qa[kk], kf[2], kf[3]);
      }

    // Mask and scale; the row maxima over the quad of lanes that shares a row. Fragment element i of n-tile j
    // is row g + 8 (i >> 1), key column j * 8 + 2t + (i & 1).
    float mx[2] = {-INFINITY, -INFINITY};
    for (int j = 0; j < kKeys / 8; ++j)
      for (int c = 0; c < 2; ++c) {
        const int col = j * 8 + 2 * t + c;
        bool seen[2] = {col < nk, col < nk};
        if (image && col < nk && key_r[stage][col] >= 0) {  // an image key: inside each row's window?
          const int kr = key_r[stage][col], kc = key_c[stage][col];
          for (int e = 0; e < 2; ++e) seen[e] = kr >= rlo[e] && kr < rhi[e] && kc >= clo[e] && kc < chi[e];
        }
        for (int e = 0; e < 2; ++e) {
          float& v = s[j][2 * e + c];
          v = seen[e] ? v * scale : -INFINITY;
          mx[e] = fmaxf(mx[e], v);
        }
      }
    float alpha[2], base[2];
    for (int e = 0; e < 2; ++e) {
      mx[e] = fmaxf(mx[e], shfl_xor(mx[e], 1));
      mx[e] = fmaxf(mx[e], shfl_xor(mx[e], 2));
      const float m_new = fmaxf(m[e], mx[e]);
      base[e] = m_new == -INFINITY ? 0.f : m_new;  // nothing seen yet: every weight is exp2(-inf) = 0
      alpha[e] = exp2f(m[e] - base[e]);
      m[e] = m_new;
      l[e] *= alpha[e];
    }
    for (int j = 0; j < kKeys / 8; ++j)
      for (int i = 0; i < 4; ++i) {
        s[j][i] = exp2f(s[j][i] - base[i >> 1]);
        l[i >> 1] += s[j][i];
      }
    for (int n = 0; n < kDimTiles; ++n)
      for (int i = 0; i < 4; ++i) acc[n][i] *= alpha[i >> 1];

    // acc += P V: the score fragments of key tiles 2kk and 2kk + 1 are the A fragment of k-step kk.
    for (int kk = 0; kk < kKeys / 16; ++kk) {
      const std::uint32_t pa[4] = {pack_bf16x2(s[2 * kk][0], s[2 * kk][1]), pack_bf16x2(s[2 * kk][2], s[2 * kk][3]),
                                   pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                   pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
      // B fragments of two output n-tiles (keys 0-7, 8-15 x columns n, n + 1) per ldmatrix.x4.trans.
      int n = 0;
      for (; n + 2 <= kDimTiles; n += 2) {
        std::uint32_t vf[4];
        ldmatrix_x4_trans(vf, vs + (kk * 16 + m_lo * 8 + m_row) * S + (n + m_hi) * 8);
        mma_bf16_m16n8k16(acc[n], pa, vf[0], vf[1]);
        mma_bf16_m16n8k16(acc[n + 1], pa, vf[2], vf[3]);
      }
      if (n < kDimTiles) {  // head_dim 72: the ninth
        std::uint32_t vf[2];
        ldmatrix_x2_trans(vf, vs + (kk * 16 + lane % 16) * S + n * 8);
        mma_bf16_m16n8k16(acc[n], pa, vf[0], vf[1]);
      }
    }
  }

  for (int e = 0; e < 2; ++e) {
    l[e] += shfl_xor(l[e], 1);
    l[e] += shfl_xor(l[e], 2);
    const std::int64_t row = query_row(warp * 16 + g + 8 * e);
    if (row < 0) continue;
    std::uint16_t* out = o + b * p.o_stride.b + h * p.o_stride.h + row * p.o_stride.s + 2 * t;
    const float inv = 1.f / l[e];
    for (int n = 0; n < kDimTiles; ++n) {
      out[n * 8] = float_to_bf16_bits(acc[n][2 * e] * inv);
      out[n * 8 + 1] = float_to_bf16_bits(acc[n][2 * e + 1] * inv);
    }
  }
}

// Host side: the launch geometry (grid x = query tiles, grid y = B * H, kThreads threads) and load widths.
struct Plan : QueryTiling {
  Vectorised vec;
};

inline Plan plan(const AttentionParams& p) {
  auto wide = [](const void* ptr, const AttentionStrides& s) {
    return reinterpret_cast<std::uintptr_t>(ptr) % 16 == 0 && s.b % 8 == 0 && s.h % 8 == 0 && s.s % 8 == 0;
  };
  return Plan{query_tiling(p, kRows), Vectorised{wide(p.q, p.q_stride), wide(p.k, p.k_stride), wide(p.v, p.v_stride)}};
}

}  // namespace mma_attention
}  // namespace pid
