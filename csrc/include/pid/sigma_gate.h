// Torch-free C++ API of the PiD sigma-aware gate.
//
//   out[b,l,d] = x[b,l,d] + sigmoid(logit[b,l,g(d)]) * lq[b,l,d]
//   logit[b,l,g] = sum_k x[b,l,k] * w_x[g,k] + lq_logit[b,l,g] - alpha_sigma[b]
//
// G == 1: one logit per token, broadcast over D (g(d) = 0).  G == D: one logit per channel (g(d) = d).
// Layout: dense row-major x, lq, out [B, L, D]; lq_logit [B, L, G]; w_x [G, D]; alpha_sigma [B] (float32).
// All arithmetic (dot products, sigmoid) is float32; bfloat16 outputs are rounded to nearest even.
// Operand types: all float32, all bfloat16, or x and out float32 with lq, lq_logit and w_x bfloat16 (the
// fast path's float32 image stream gated by bfloat16 weights and latent features).
//
// sigma_gate_apply is the gate's epilogue alone, for a logit computed elsewhere (for G == D the
// python face computes logit = lq_logit + x·W_xᵀ with a BLAS / cuBLAS GEMM, then calls it):
//   out[b,l,d] = x[b,l,d] + sigmoid(logit[b,l,g(d)] - alpha_sigma[b]) * lq[b,l,d]
// x and lq: float32, bfloat16, or float32 x with bfloat16 lq; logit [B, L, G]: float32 or lq's dtype. The
// arithmetic is float32.
#pragma once

#include <cstdint>

#include "pid/bf16.h"

namespace pid {

struct SigmaGateSizes {
  std::int64_t B, L, D, G;  // G must be 1 or D
};

void sigma_gate_cpu(const float* x, const float* lq, const float* lq_logit, const float* w_x,
                    const float* alpha_sigma, float* out, SigmaGateSizes s);
void sigma_gate_cpu(const bf16* x, const bf16* lq, const bf16* lq_logit, const bf16* w_x,
                    const float* alpha_sigma, bf16* out, SigmaGateSizes s);
void sigma_gate_cpu(const float* x, const bf16* lq, const bf16* lq_logit, const bf16* w_x,
                    const float* alpha_sigma, float* out, SigmaGateSizes s);

void sigma_gate_apply_cpu(const float* x, const float* lq, const float* logit, const float* alpha_sigma,
                          float* out, SigmaGateSizes s);
void sigma_gate_apply_cpu(const bf16* x, const bf16* lq, const float* logit, const float* alpha_sigma,
                          bf16* out, SigmaGateSizes s);
void sigma_gate_apply_cpu(const bf16* x, const bf16* lq, const bf16* logit, const float* alpha_sigma,
                          bf16* out, SigmaGateSizes s);
void sigma_gate_apply_cpu(const float* x, const bf16* lq, const float* logit, const float* alpha_sigma,
                          float* out, SigmaGateSizes s);
void sigma_gate_apply_cpu(const float* x, const bf16* lq, const bf16* logit, const float* alpha_sigma,
                          float* out, SigmaGateSizes s);

// CUDA: all pointers in device memory, `stream` is a cudaStream_t. Asynchronous; returns the
// cudaError_t of the launch (0 = success). G == D with bfloat16 weights runs on tensor cores (sm_80+): exact
// products, float32 sums; a float32 x is split exactly into three bfloat16 terms for them.
int sigma_gate_cuda(const float* x, const float* lq, const float* lq_logit, const float* w_x,
                    const float* alpha_sigma, float* out, SigmaGateSizes s, void* stream);
int sigma_gate_cuda(const bf16* x, const bf16* lq, const bf16* lq_logit, const bf16* w_x,
                    const float* alpha_sigma, bf16* out, SigmaGateSizes s, void* stream);
int sigma_gate_cuda(const float* x, const bf16* lq, const bf16* lq_logit, const bf16* w_x,
                    const float* alpha_sigma, float* out, SigmaGateSizes s, void* stream);

int sigma_gate_apply_cuda(const float* x, const float* lq, const float* logit, const float* alpha_sigma,
                          float* out, SigmaGateSizes s, void* stream);
int sigma_gate_apply_cuda(const bf16* x, const bf16* lq, const float* logit, const float* alpha_sigma,
                          bf16* out, SigmaGateSizes s, void* stream);
int sigma_gate_apply_cuda(const bf16* x, const bf16* lq, const bf16* logit, const float* alpha_sigma,
                          bf16* out, SigmaGateSizes s, void* stream);
int sigma_gate_apply_cuda(const float* x, const bf16* lq, const float* logit, const float* alpha_sigma,
                          float* out, SigmaGateSizes s, void* stream);
int sigma_gate_apply_cuda(const float* x, const bf16* lq, const bf16* logit, const float* alpha_sigma,
                          float* out, SigmaGateSizes s, void* stream);

}  // namespace pid
