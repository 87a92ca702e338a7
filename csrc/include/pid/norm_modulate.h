// Torch-free C++ API of two fused steps of PiD's transformer blocks (the MMDiT blocks and the PiT pixel
// blocks; python/pid/nn/layers.py): RMSNorm followed by the adaLN modulation norm(x) * (1 + scale) + shift,
// and the gated residual update x + gate * y. Both round every step as the PyTorch expressions do. Params
// structs, dtype tags and errors as pid/dtype.h states for the whole API.
//
// All operands are "row views" of a logical [B, L, D] tensor: row (b, l) holds D contiguous elements
// starting at  data + b * stride_b + l * stride_l  (strides in elements). A stride of 0 broadcasts
// that dimension, e.g. the MMDiT modulation vectors [B, 1, D] have stride_l = 0, and a chunk k of the
// PiT per-pixel modulation mods [N, P, K*c] is the view  data = mods + k*c, stride_b = P*K*c,
// stride_l = K*c. Outputs are dense row-major [B, L, D].
//
// rms_norm_modulate, with every step rounded as PyTorch rounds the reference expression
//   n   = cast_to_x_dtype(x_f32 * (1 / sqrt(sum_d(x_f32^2) / D + eps)))       (RMSNorm)
//   out = cast_to_out_dtype((weight * n) * cast_to_scale_dtype(1 + scale) + shift)     (modulate)
// Each product, sum and cast is one IEEE float32 rounding (no FMA contraction), so the result is
// bit-identical to the reference whenever the float32 sum of squares is (e.g. when it is exact);
// otherwise they differ only through the order of that sum (and, on CUDA, rsqrtf's last bits).
//
// gated_residual:  out = cast_to_out_dtype(x + p),  p = gate * y in float32, rounded to bfloat16
// when gate and y are both bfloat16 (PyTorch computes the product in their common dtype).
#pragma once

#include <cstdint>

#include "pid/dtype.h"

namespace pid {

// A [B, L, D] operand: element (b, l, d) at  data + b*stride_b + l*stride_l + d  (in elements), of type dtype.
struct RowView {
  const void* data;
  DType dtype;
  std::int64_t stride_b, stride_l;
};

// Dtypes: any of float32 and bfloat16 for x, for shift and scale (one dtype for both: shift.dtype must equal
// scale.dtype, else std::invalid_argument) and for out_dtype; the weight is float32.
struct NormModulateParams {
  std::int64_t B, L, D;
  RowView x;             // float32 or bfloat16
  const float* weight;   // [D], contiguous, float32
  RowView shift, scale;  // float32 or bfloat16, the same for both; stride 0 broadcasts
  void* out;             // dense [B, L, D]
  DType out_dtype;       // float32 or bfloat16
  float eps;
};

// Dtypes: any of float32 and bfloat16 for each of x, gate, y and out_dtype.
struct GatedResidualParams {
  std::int64_t B, L, D;
  RowView x, gate, y;  // float32 or bfloat16 each; stride 0 broadcasts
  void* out;           // dense [B, L, D]
  DType out_dtype;     // float32 or bfloat16
};

// CPU: OpenMP over rows. Synchronous.
void rms_norm_modulate_cpu(const NormModulateParams& p);
void gated_residual_cpu(const GatedResidualParams& p);

// CUDA: every pointer in device memory; `stream` is a cudaStream_t. Asynchronous; returns the
// cudaError_t of the launch (0 = success).
int rms_norm_modulate_cuda(const NormModulateParams& p, void* stream);
int gated_residual_cuda(const GatedResidualParams& p, void* stream);

}  // namespace pid
