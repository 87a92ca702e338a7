// CUDA implementation of pid::qk_norm_rope and pid::attention (see pid/attention.h).
//
// qk_norm_rope: bfloat16 in and out with d % 8 == 0 (the network's case): qk_norm_rope_bf16.cuh, 16 bytes
// per lane; anything else: one warp per (b, n, q or k, h) below.
// attention, bfloat16: the tensor-core kernel of attention_mma.cuh.
// attention, float32: a CUDA-core kernel, float32 math throughout (no TF32): one block of 64 threads per
// query tile, one thread per query row holding its (pre-scaled) query and its output accumulator in
// registers; K/V tiles of 32 keys are staged in shared memory as float32 and every thread walks them
// with an online softmax (base 2), 8 keys per rescale. Windowed attention uses the same kernels: a
// tile's keys are the text keys and the key rectangle of its image block (image_tile, ../attention_tiling.h),
// masked per query.
#include "pid/attention.h"
#include "../attention_tiling.h"
#include "../attention_dtypes.h"
#include "attention_mma.cuh"
#include "load_store.cuh"
#include "qk_norm_rope_bf16.cuh"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>

namespace pid {
namespace {

// ---- attention -----------------------------------------------------------------------------------

constexpr int kRows = 64;     // query rows (threads) per block
constexpr int kKeyTile = 32;  // keys per shared-memory tile
constexpr int kChunk = 8;     // keys per online-softmax rescale

template <typename T, int D>
__global__ void __launch_bounds__(kRows)
    attention_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ o,
                     AttentionParams p, WindowTiling wt) {
  __shared__ float ks[kKeyTile][D];
  __shared__ float vs[kKeyTile][D];
  __shared__ int key_a[kKeyTile];  // grid row of an image key under a mask, -1: visible to every query
  __shared__ int key_b[kKeyTile];

  const std::int64_t b = blockIdx.y / p.H, h = blockIdx.y % p.H, tile = blockIdx.x;
  const int t = threadIdx.x;
  const T* kb = k + b * p.k_stride.b + h * p.k_stride.h;
  const T* vb = v + b * p.v_stride.b + h * p.v_stride.h;

  // This block's queries and keys. Keys are enumerated as e in [0, n_keys): e < n_plain are key rows
  // 0..n_plain-1 seen by every query; the rest walk the key rectangle of an image block.
  std::int64_t row = -1, n_plain = p.Sk, n_keys = p.Sk;
  ImageTile it{};
  int rlo = 0, rhi = 0, clo = 0, chi = 0;
  const bool image = p.window > 0 && tile >= wt.text_tiles;
  if (!image) {
    const std::int64_t rows = p.window > 0 ? wt.n_text_q : p.Sq;
    if (tile * kRows + t < rows) row = tile * kRows + t;
  } else {
    it = image_tile(p, wt, tile - wt.text_tiles);
    n_plain = p.n_text;
    n_keys = p.n_text + it.rh * it.cw;
    if (t < it.h * it.w) {
      const std::int64_t i = it.i0 + t / it.w, j = it.j0 + t % it.w;
      row = wt.n_text_q + i * p.grid_w + j;
      rlo = int(window_start(i, p.window, p.grid_h));
      rhi = rlo + int(window_len(p.window, p.grid_h));
      clo = int(window_start(j, p.window, p.grid_w));
      chi = clo + int(window_len(p.window, p.grid_w));
    }
  }

  const float qscale = p.scale * 1.4426950408889634f;  // scores in base 2
  float qr[D], acc[D];
  if (row >= 0) {
    const T* qp = q + b * p.q_stride.b + h * p.q_stride.h + row * p.q_stride.s;
#pragma unroll
    for (int d = 0; d < D; ++d) {
      qr[d] = ld(qp + d) * qscale;
      acc[d] = 0.f;
    }
  }
  float m = -INFINITY, l = 0.f;

  for (std::int64_t e0 = 0; e0 < n_keys; e0 += kKeyTile) {
    const int nk = int(n_keys - e0 < kKeyTile ? n_keys - e0 : kKeyTile);
    // Stage the tile (coalesced over the head_dim axis) and the keys' grid coordinates.
    for (int idx = t; idx < nk * D; idx += kRows) {
      const int j = idx / D, d = idx % D;
      const std::int64_t e = e0 + j;
      std::int64_t key;
      if (e < n_plain) {
        key = e;
      } else {
        const std::int64_t r = e - n_plain;
        key = p.n_text + (it.r0 + r / it.cw) * p.grid_w + it.c0 + r % it.cw;
      }
      ks[j][d] = ld(kb + key * p.k_stride.s + d);
      vs[j][d] = ld(vb + key * p.v_stride.s + d);
    }
    if (t < nk) {
      const std::int64_t e = e0 + t;
      key_a[t] = e < n_plain ? -1 : int(it.r0 + (e - n_plain) / it.cw);
      key_b[t] = e < n_plain ? 0 : int(it.c0 + (e - n_plain) % it.cw);
    }
    __syncthreads();
    if (row >= 0) {
      for (int j0 = 0; j0 < nk; j0 += kChunk) {
        float s[kChunk];
        float mx = -INFINITY;
#pragma unroll
        for (int jj = 0; jj < kChunk; ++jj) {
          const int j = j0 + jj;
          s[jj] = -INFINITY;
          if (j < nk) {
            const int a = key_a[j], c = key_b[j];
            if (a < 0 || (a >= rlo && a < rhi && c >= clo && c < chi)) {
              float dot = 0.f;
#pragma unroll
              for (int d = 0; d < D; ++d) dot = fmaf(qr[d], ks[j][d], dot);
              s[jj] = dot;
            }
          }
          mx = fmaxf(mx, s[jj]);
        }
        const float m_new = fmaxf(m, mx);
        if (m_new == -INFINITY) continue;  // nothing visible yet
        const float alpha = exp2f(m - m_new);
        l *= alpha;
#pragma unroll
        for (int d = 0; d < D; ++d) acc[d] *= alpha;
#pragma unroll
        for (int jj = 0; jj < kChunk; ++jj) {
          const float pj = exp2f(s[jj] - m_new);  // 0 for masked keys and for j >= nk
          l += pj;
          if (pj != 0.f) {  // skips masked keys and j >= nk (stale or unset shared memory)
#pragma unroll
            for (int d = 0; d < D; ++d) acc[d] = fmaf(pj, vs[j0 + jj][d], acc[d]);
          }
        }
        m = m_new;
      }
    }
    __syncthreads();
  }
  if (row >= 0) {
    T* op = o + b * p.o_stride.b + h * p.o_stride.h + row * p.o_stride.s;
    const float inv = 1.f / l;
#pragma unroll
    for (int d = 0; d < D; ++d) st(op + d, acc[d] * inv);
  }
}

// float32: the CUDA-core kernel above. D is 64 or 72 (attention_cuda checked).
int launch_attention_f32(const AttentionParams& p, cudaStream_t s) {
  const QueryTiling qt = query_tiling(p, kRows);
  const std::int64_t bh = p.B * p.H;
  if (qt.tiles > 0x7fffffff || bh > 65535) return cudaErrorInvalidConfiguration;
  const dim3 grid{unsigned(qt.tiles), unsigned(bh)};
  const auto* q = static_cast<const float*>(p.q);
  const auto* k = static_cast<const float*>(p.k);
  const auto* v = static_cast<const float*>(p.v);
  auto* o = static_cast<float*>(p.o);
  if (p.D == 64)
    attention_kernel<float, 64><<<grid, kRows, 0, s>>>(q, k, v, o, p, qt.wt);
  else
    attention_kernel<float, 72><<<grid, kRows, 0, s>>>(q, k, v, o, p, qt.wt);
  return cudaGetLastError();
}

// bfloat16: the tensor-core kernel of attention_mma.cuh. D is 64 or 72 (attention_cuda checked).
int launch_attention_bf16(const AttentionParams& p, cudaStream_t s) {
  const mma_attention::Plan pl = mma_attention::plan(p);
  if (pl.tiles > 0x7fffffff || p.B * p.H > 65535) return cudaErrorInvalidConfiguration;
  const dim3 grid{unsigned(pl.tiles), unsigned(p.B * p.H)};
  const auto* q = static_cast<const std::uint16_t*>(p.q);
  const auto* k = static_cast<const std::uint16_t*>(p.k);
  const auto* v = static_cast<const std::uint16_t*>(p.v);
  auto* o = static_cast<std::uint16_t*>(p.o);
  if (p.D == 64)
    mma_attention::attention_kernel<64><<<grid, mma_attention::kThreads, 0, s>>>(q, k, v, o, p, pl.wt, pl.vec);
  else
    mma_attention::attention_kernel<72><<<grid, mma_attention::kThreads, 0, s>>>(q, k, v, o, p, pl.wt, pl.vec);
  return cudaGetLastError();
}

// ---- qk_norm_rope --------------------------------------------------------------------------------

constexpr int kWarpsPerBlock = 4;

// One warp per (b, n, which, h); lane handles the pairs lane, lane + 32, ...
template <typename In, typename Wt, typename Out>
__global__ void qk_norm_rope_kernel(QkNormRopeParams p) {
  const std::int64_t warp = std::int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const std::int64_t total = p.B * p.N * 2 * p.H;
  if (warp >= total) return;  // uniform per warp
  const std::int64_t h = warp % p.H, which = (warp / p.H) % 2, n = (warp / (2 * p.H)) % p.N,
                     b = warp / (2 * p.H * p.N);
  Out* out = static_cast<Out*>(which == 0 ? p.q_out : p.k_out);
  if (out == nullptr) return;
  const In* x = static_cast<const In*>(p.qkv) + b * p.qkv_stride[0] + n * p.qkv_stride[1] +
                which * p.qkv_stride[2] + h * p.qkv_stride[3];
  const Wt* w = static_cast<const Wt*>(which == 0 ? p.q_weight : p.k_weight);
  constexpr bool kRoundProduct = sizeof(In) == 2 && sizeof(Wt) == 2;
  const std::int64_t half = p.D / 2;
  float ss = 0.f;
  for (std::int64_t i = lane; i < half; i += 32) {
    const float a = ld(x + 2 * i), c = ld(x + 2 * i + 1);
    ss += a * a + c * c;
  }
  for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, off);
  const float inv = 1.f / sqrtf(ss / float(p.D) + p.eps);
  const std::int64_t rows = which == 0 ? p.q_rows : p.k_rows, offset = which == 0 ? p.q_offset : p.k_offset;
  Out* dst = out + ((b * p.H + h) * rows + offset + n) * p.D;
  for (std::int64_t i = lane; i < half; i += 32) {
    float y[2];
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const float r = round_to<In>(ld(x + 2 * i + e) * inv);  // RMSNorm: cast to the input dtype
      const float prod = ld(w + 2 * i + e) * r;                  // promoted: bf16 only if both are
      y[e] = kRoundProduct ? round_to<In>(prod) : prod;
    }
    if (p.cos != nullptr) {
      const float c = p.cos[n * half + i], s = p.sin[n * half + i];
      const float r0 = y[0] * c - y[1] * s, r1 = y[0] * s + y[1] * c;
      // Cast back to the promoted dtype first (bfloat16 when it is), as the reference.
      st(dst + 2 * i, kRoundProduct ? round_to<In>(r0) : r0);
      st(dst + 2 * i + 1, kRoundProduct ? round_to<In>(r1) : r1);
    } else {
      st(dst + 2 * i, y[0]);
      st(dst + 2 * i + 1, y[1]);
    }
  }
}

template <typename In, typename Wt, typename Out>
int launch_norm_rope(const QkNormRopeParams& p, void* stream) {
  const std::int64_t warps = p.B * p.N * 2 * p.H;
  const std::int64_t blocks = (warps + kWarpsPerBlock - 1) / kWarpsPerBlock;
  if (blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
  qk_norm_rope_kernel<In, Wt, Out><<<unsigned(blocks), kWarpsPerBlock * 32, 0, static_cast<cudaStream_t>(stream)>>>(p);
  return cudaGetLastError();
}

}  // namespace

int qk_norm_rope_cuda(const QkNormRopeParams& p, void* stream) {
  constexpr const char* fn = "pid::qk_norm_rope_cuda";
  if (p.B * p.N * p.H == 0 || p.D == 0 || (!p.q_out && !p.k_out)) return cudaSuccess;
  namespace vec = qk_norm_rope_bf16;
  if (vec::supports(p)) {
    const std::int64_t blocks = (vec::warps(p) + vec::kWarps - 1) / vec::kWarps;
    if (blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
    auto s = static_cast<cudaStream_t>(stream);
    return with_qk_norm_rope_dtypes<std::uint16_t>(fn, p, [&](auto, auto wt, auto) -> int {
      vec::qk_norm_rope_kernel<decltype(wt)><<<unsigned(blocks), 32 * vec::kWarps, 0, s>>>(p);
      return cudaGetLastError();
    });
  }
  return with_qk_norm_rope_dtypes<__nv_bfloat16>(fn, p, [&](auto in, auto wt, auto out) {
    return launch_norm_rope<decltype(in), decltype(wt), decltype(out)>(p, stream);
  });
}

bool attention_cuda_supports_head_dim(std::int64_t D) { return D == 64 || D == 72; }

int attention_cuda(const AttentionParams& p, void* stream) {
  constexpr const char* fn = "pid::attention_cuda";
  if (p.B * p.H * p.Sq == 0) return cudaSuccess;
  if (!attention_cuda_supports_head_dim(p.D))
    throw_unsupported(fn, "head_dim must be 64 or 72, got " + std::to_string(p.D));
  auto s = static_cast<cudaStream_t>(stream);
  return with_attention_dtypes<std::uint16_t>(fn, p, [&](auto t) {
    return std::is_same_v<decltype(t), float> ? launch_attention_f32(p, s) : launch_attention_bf16(p, s);
  });
}

}  // namespace pid
