// Torch-free C++ API of the PiD sigma-aware gate. Params structs, dtype tags and errors as pid/dtype.h states
// for the whole API.
//
//   out[b,l,d] = x[b,l,d] + sigmoid(logit[b,l,g(d)]) * lq[b,l,d]
//   logit[b,l,g] = sum_k x[b,l,k] * w_x[g,k] + lq_logit[b,l,g] - alpha_sigma[b]
//
// G == 1: one logit per token, broadcast over D (g(d) = 0).  G == D: one logit per channel (g(d) = d).
// Layout: dense row-major x, lq, out [B, L, D]; lq_logit [B, L, G]; w_x [G, D]; alpha_sigma [B] (float32).
// All arithmetic (dot products, sigmoid) is float32; bfloat16 outputs are rounded to nearest even.
//
// sigma_gate_apply is the gate's epilogue alone, for a logit computed elsewhere (for G == D the
// python face computes logit = lq_logit + x·W_xᵀ with a BLAS / cuBLAS GEMM, then calls it):
//   out[b,l,d] = x[b,l,d] + sigmoid(logit[b,l,g(d)] - alpha_sigma[b]) * lq[b,l,d]
// The arithmetic is float32.
#pragma once

#include <cstdint>

#include "pid/dtype.h"

namespace pid {

struct SigmaGateSizes {
  std::int64_t B, L, D, G;  // G must be 1 or D
};

// Dtypes (x_dtype, lq_dtype): (float32, float32), (bfloat16, bfloat16), or (float32, bfloat16), the fast path's
// float32 image stream gated by bfloat16 weights and latent features. A bfloat16 x with a float32 lq throws
// std::invalid_argument.
struct SigmaGateParams {
  SigmaGateSizes sizes;
  const void* x;             // [B, L, D]
  const void* lq;            // [B, L, D]
  const void* lq_logit;      // [B, L, G]
  const void* w_x;           // [G, D]
  const float* alpha_sigma;  // [B], float32
  void* out;                 // [B, L, D]
  DType x_dtype;             // of x and out: float32 or bfloat16
  DType lq_dtype;            // of lq, lq_logit and w_x: float32 or bfloat16
};

// Dtypes: x_dtype and lq_dtype as for sigma_gate, logit_dtype float32 or lq_dtype; anything else throws
// std::invalid_argument.
struct SigmaGateApplyParams {
  SigmaGateSizes sizes;
  const void* x;             // [B, L, D]
  const void* lq;            // [B, L, D]
  const void* logit;         // [B, L, G]
  const float* alpha_sigma;  // [B], float32
  void* out;                 // [B, L, D]
  DType x_dtype;             // of x and out: float32 or bfloat16
  DType lq_dtype;            // float32 or bfloat16
  DType logit_dtype;         // float32 or lq_dtype
};

// CPU: OpenMP over tokens. Synchronous.
void sigma_gate_cpu(const SigmaGateParams& p);
void sigma_gate_apply_cpu(const SigmaGateApplyParams& p);

// CUDA: every pointer in device memory; `stream` is a cudaStream_t. Asynchronous; returns the cudaError_t of
// the launch (0 = success). G == D with bfloat16 weights runs on tensor cores (sm_80+): exact products, float32
// sums; a float32 x is split exactly into three bfloat16 terms for them.
int sigma_gate_cuda(const SigmaGateParams& p, void* stream);
int sigma_gate_apply_cuda(const SigmaGateApplyParams& p, void* stream);

}  // namespace pid
