// Torch-free C++ API of the PiD attention family: per-head q/k RMSNorm + RoPE, and exact softmax
// attention (global, or windowed over a token grid). See docs/attention.md. Params structs, dtype tags and
// errors as pid/dtype.h states for the whole API.
//
// qk_norm_rope ------------------------------------------------------------------------------------
//   For each batch b, token n, head h and which in {q, k}, with x = qkv[b, n, which, h, :] (d values):
//     r     = x_f32 * (1 / sqrt(mean(x_f32^2) + eps))                     (float32)
//     r     = round_to(qkv dtype, r)                                      (RMSNorm: cast to the input dtype)
//     y     = w_f32 * r          rounded to bfloat16 iff qkv and w are both bfloat16 (type promotion)
//     out[b, h, offset + n, 2i]   = y[2i] cos[n, i] - y[2i+1] sin[n, i]    (float32; no table: y itself)
//     out[b, h, offset + n, 2i+1] = y[2i] sin[n, i] + y[2i+1] cos[n, i]
//   rounded to the promoted dtype (bfloat16 iff qkv and w are), then to the output dtype. qkv is read through its strides (the qkv projection's output viewed as
//   [B, N, 3, H, d]; no copy), the outputs are dense [B, H, S_out, d] buffers written at rows
//   [offset, offset + N): two calls (text stream, image stream) fill one joint [text, image] buffer.
//
// attention ---------------------------------------------------------------------------------------
//   o[b, h, i, :] = sum_j softmax_j(scale * q[b, h, i, :] . k[b, h, j, :]) v[b, h, j, :]
//   over the keys j that query i sees, with float32 accumulation and an online (flash) softmax: no
//   Sq x Sk matrix is ever stored.
//   Global (window == 0): every query sees all Sk keys; Sq and Sk are independent.
//   Windowed (window = w > 0): the keys are the joint sequence [n_text text tokens, then a grid_h x
//   grid_w row-major image grid] (Sk = n_text + grid_h * grid_w) and the queries are its last Sq
//   positions (Sq = Sk: all tokens; Sq = Sk - n_text: image tokens only). A text query sees all keys.
//   An image query at grid (i, j) sees the n_text text keys and the image keys in rows
//   [window_start(i, w, grid_h), + min(w, grid_h)) x columns [window_start(j, w, grid_w), + min(w, grid_w)):
//   a w x w neighbourhood shifted to stay inside the grid (neighbourhood attention). With
//   w >= max(grid_h, grid_w) this is global attention.
#pragma once

#include <cstdint>

#include "pid/bf16.h"
#include "pid/dtype.h"

namespace pid {

// ---- qk_norm_rope --------------------------------------------------------------------------------

// Dtypes: any of float32 and bfloat16 for qkv, for the two weights (one tag) and for the two outputs (one
// tag); cos and sin are float32.
struct QkNormRopeParams {
  std::int64_t B, N, H, D;             // D even
  const void* qkv;                     // [B, N, 3, H, D], element strides below, last dim contiguous
  std::int64_t qkv_stride[4];          // strides of b, n, which (q/k/v), h
  DType qkv_dtype;                     // float32 or bfloat16
  const void* q_weight;                // [D], contiguous
  const void* k_weight;                // [D], contiguous
  DType weight_dtype;                  // of q_weight and k_weight: float32 or bfloat16
  const float* cos;                    // [N, D/2] contiguous, or nullptr (then no rotation)
  const float* sin;                    // [N, D/2] contiguous, or nullptr
  float eps;
  void* q_out;                         // [B, H, q_rows, D] dense, or nullptr (q not wanted)
  void* k_out;                         // [B, H, k_rows, D] dense, or nullptr
  std::int64_t q_rows, q_offset;       // q written at rows [q_offset, q_offset + N)
  std::int64_t k_rows, k_offset;
  DType out_dtype;                     // of q_out and k_out: float32 or bfloat16
};

// CPU: OpenMP over tokens. Synchronous.
void qk_norm_rope_cpu(const QkNormRopeParams& p);
// CUDA: every pointer in device memory; `stream` is a cudaStream_t. Asynchronous; returns the
// cudaError_t of the launch (0 = success).
int qk_norm_rope_cuda(const QkNormRopeParams& p, void* stream);

// ---- attention -----------------------------------------------------------------------------------

struct AttentionStrides {
  std::int64_t b, h, s;  // element strides of batch, head and token; the head_dim axis is contiguous
};

// Dtypes: q, k, v and o all float32 or all bfloat16 (one tag); the arithmetic is float32.
struct AttentionParams {
  std::int64_t B, H, Sq, Sk, D;
  const void* q;                // [B, H, Sq, D], strides q_stride
  const void* k;                // [B, H, Sk, D], strides k_stride
  const void* v;                // [B, H, Sk, D], strides v_stride
  void* o;                      // [B, H, Sq, D], strides o_stride
  DType dtype;                  // of q, k, v and o: float32 or bfloat16
  AttentionStrides q_stride, k_stride, v_stride, o_stride;
  float scale;                  // usually 1 / sqrt(D)
  std::int64_t window;          // 0: global; > 0: windowed (then the fields below apply)
  std::int64_t grid_h, grid_w, n_text;
};

// CPU: any D >= 1. OpenMP over (batch, head, query tiles). Synchronous.
void attention_cpu(const AttentionParams& p);
// CUDA: every pointer in device memory; `stream` is a cudaStream_t. D must be 64 or 72
// (attention_cuda_supports_head_dim; any other D throws std::invalid_argument). Asynchronous; returns the
// cudaError_t of the launch (0 = success). bfloat16 runs on tensor cores (sm_80+) and rounds the softmax
// weights to bfloat16 before the product with v (as flash attention does); float32 keeps every step in float32.
bool attention_cuda_supports_head_dim(std::int64_t D);
int attention_cuda(const AttentionParams& p, void* stream);

// ---- window geometry ------------------------------------------------------------------------------

// First index of the window of size w around position i on an axis of length n; the window is
// [start, start + window_len(w, n)). Odd w is centred on i; even w reaches w/2 before and w/2 - 1 after i.
constexpr std::int64_t window_start(std::int64_t i, std::int64_t w, std::int64_t n) {
  const std::int64_t len = w < n ? w : n;
  std::int64_t s = i - w / 2;
  if (s > n - len) s = n - len;
  return s < 0 ? 0 : s;
}

constexpr std::int64_t window_len(std::int64_t w, std::int64_t n) { return w < n ? w : n; }

}  // namespace pid
