// Runs CUDA kernel code on the CPU, one std::thread per CUDA thread, so that CI (no GPU) tests a kernel's
// logic: indexing, masking, __syncthreads placement, warp shuffles and the tensor-core fragment layouts.
// A functional model, not a performance tool: blocks run one after another, __shared__ variables are
// function statics (one block at a time uses them), and the warp primitives below follow the PTX ISA.
//
// Include this instead of the CUDA headers, then the kernel's .cuh; launch with pid::emu::launch.
#pragma once

#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "pid/bf16.h"

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct alignas(16) float4 {
  float x, y, z, w;
};

namespace pid::emu {

struct Warp {
  std::barrier<> sync{32};
  float f[32];
  std::uint32_t a[32][4], b[32][2];
  const std::uint16_t* row[32];
  float c[32][4];
};

struct Block {
  explicit Block(unsigned threads) : sync(threads), warps((threads + 31) / 32) {
    for (auto& w : warps) w = std::make_unique<Warp>();
  }
  std::barrier<> sync;
  std::vector<std::unique_ptr<Warp>> warps;
};

inline thread_local dim3 thread_idx, block_idx;
inline thread_local Block* block = nullptr;
inline dim3 block_dim, grid_dim;

inline Warp& warp() { return *block->warps[thread_idx.x / 32]; }
inline unsigned lane() { return thread_idx.x % 32; }

// Runs kernel() for every thread of every block of a grid (x, y) of blocks of `threads` threads.
inline void launch(dim3 grid, unsigned threads, const std::function<void()>& kernel) {
  grid_dim = grid, block_dim = dim3{threads, 1, 1};
  for (unsigned by = 0; by < grid.y; ++by)
    for (unsigned bx = 0; bx < grid.x; ++bx) {
      Block blk(threads);
      std::vector<std::thread> pool;
      pool.reserve(threads);
      for (unsigned t = 0; t < threads; ++t)
        pool.emplace_back([&, t] {
          thread_idx = dim3{t, 0, 0}, block_idx = dim3{bx, by, 0}, block = &blk;
          kernel();
          // A thread that has returned no longer takes part in barriers (CUDA: exited threads).
          blk.warps[t / 32]->sync.arrive_and_drop();
          blk.sync.arrive_and_drop();
        });
      for (auto& th : pool) th.join();
    }
}

}  // namespace pid::emu

#define threadIdx (pid::emu::thread_idx)
#define blockIdx (pid::emu::block_idx)
#define blockDim (pid::emu::block_dim)
#define gridDim (pid::emu::grid_dim)
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

namespace pid {

inline void sync_block() { emu::block->sync.arrive_and_wait(); }

// __shfl_xor_sync(0xffffffff, v, mask): the value of lane (lane ^ mask).
inline float shfl_xor(float v, int mask) {
  emu::Warp& w = emu::warp();
  w.f[emu::lane()] = v;
  w.sync.arrive_and_wait();
  const float r = w.f[emu::lane() ^ unsigned(mask)];
  w.sync.arrive_and_wait();
  return r;
}

// __shfl_sync(0xffffffff, v, src): the value of lane src.
inline float shfl_idx(float v, int src) {
  emu::Warp& w = emu::warp();
  w.f[emu::lane()] = v;
  w.sync.arrive_and_wait();
  const float r = w.f[unsigned(src) % 32];
  w.sync.arrive_and_wait();
  return r;
}

inline float bf16_bits_to_float(std::uint16_t bits) { return bf16_to_float(bf16{bits}); }
inline std::uint16_t float_to_bf16_bits(float f) { return float_to_bf16(f).bits; }  // nearest even, as cvt.rn

inline std::uint32_t pack_bf16x2(float lo, float hi) {
  return std::uint32_t(float_to_bf16_bits(lo)) | std::uint32_t(float_to_bf16_bits(hi)) << 16;
}

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, c += A B, with the PTX ISA's fragment layout
// (g = lane / 4, t = lane % 4): a[0] = A[g][2t, 2t+1], a[1] = A[g+8][2t, 2t+1], a[2] = A[g][2t+8, 2t+9],
// a[3] = A[g+8][2t+8, 2t+9]; b0 = B[2t, 2t+1][g], b1 = B[2t+8, 2t+9][g]; c = C[g][2t, 2t+1], C[g+8][2t, 2t+1].
// Each register holds its lower-indexed element in its low 16 bits. Products are exact in float32;
// the sum is taken in double here (the hardware's accumulation order is unspecified).
inline void mma_bf16_m16n8k16(float (&c)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
  emu::Warp& w = emu::warp();
  const unsigned me = emu::lane();
  for (int i = 0; i < 4; ++i) w.a[me][i] = a[i], w.c[me][i] = c[i];
  w.b[me][0] = b0, w.b[me][1] = b1;
  w.sync.arrive_and_wait();
  float A[16][16], B[16][8];
  auto lo = [](std::uint32_t r) { return bf16_bits_to_float(std::uint16_t(r & 0xffffu)); };
  auto hi = [](std::uint32_t r) { return bf16_bits_to_float(std::uint16_t(r >> 16)); };
  for (unsigned l = 0; l < 32; ++l) {
    const unsigned g = l / 4, t = l % 4;
    for (int i = 0; i < 4; ++i) {
      const unsigned row = g + 8 * (i & 1), col = 2 * t + 8 * (i >> 1);
      A[row][col] = lo(w.a[l][i]), A[row][col + 1] = hi(w.a[l][i]);
    }
    for (int i = 0; i < 2; ++i) B[2 * t + 8 * i][g] = lo(w.b[l][i]), B[2 * t + 8 * i + 1][g] = hi(w.b[l][i]);
  }
  const unsigned g = me / 4, t = me % 4;
  for (int i = 0; i < 4; ++i) {
    const unsigned row = g + 8 * (i >> 1), col = 2 * t + (i & 1);
    double acc = w.c[me][i];
    for (int kk = 0; kk < 16; ++kk) acc += double(A[row][kk]) * double(B[kk][col]);
    c[i] = float(acc);
  }
  w.sync.arrive_and_wait();
}

// ldmatrix.sync.aligned.m8n8.{x2,x4}{,.trans}.shared.b16: lane 8i + j points at row j (8 values) of the 8x8
// matrix M_i; lane (g, t) receives r[i] = M_i[g][2t] | M_i[g][2t+1] << 16, or with .trans
// M_i[2t][g] | M_i[2t+1][g] << 16.
template <int N, bool Trans>
void ldmatrix(std::uint32_t (&r)[N], const std::uint16_t* row) {
  emu::Warp& w = emu::warp();
  const unsigned me = emu::lane();
  w.row[me] = row;
  w.sync.arrive_and_wait();
  const unsigned g = me / 4, t = me % 4;
  for (int i = 0; i < N; ++i) {
    const std::uint16_t* const* m = w.row + 8 * i;  // the rows of M_i
    r[i] = Trans ? std::uint32_t(m[2 * t][g]) | std::uint32_t(m[2 * t + 1][g]) << 16
                 : std::uint32_t(m[g][2 * t]) | std::uint32_t(m[g][2 * t + 1]) << 16;
  }
  w.sync.arrive_and_wait();
}
inline void ldmatrix_x4(std::uint32_t (&r)[4], const std::uint16_t* row) { ldmatrix<4, false>(r, row); }
inline void ldmatrix_x4_trans(std::uint32_t (&r)[4], const std::uint16_t* row) { ldmatrix<4, true>(r, row); }
inline void ldmatrix_x2_trans(std::uint32_t (&r)[2], const std::uint16_t* row) { ldmatrix<2, true>(r, row); }

// cp.async: copies are queued per thread and land only when a cp_async_wait releases their group (the latest
// moment the hardware may complete them), so reading a buffer before waiting for it reads stale data.
namespace emu {
struct AsyncCopy {
  void* dst;
  const void* src;
};
inline thread_local std::vector<AsyncCopy> open_group;
inline thread_local std::deque<std::vector<AsyncCopy>> committed;
}  // namespace emu

inline void cp_async_16(void* smem, const void* gmem) { emu::open_group.push_back({smem, gmem}); }

inline void cp_async_commit() {
  emu::committed.push_back(std::move(emu::open_group));
  emu::open_group.clear();
}

template <int N>
void cp_async_wait() {
  while (emu::committed.size() > std::size_t(N)) {
    for (const emu::AsyncCopy& c : emu::committed.front()) std::memcpy(c.dst, c.src, 16);
    emu::committed.pop_front();
  }
}

}  // namespace pid
