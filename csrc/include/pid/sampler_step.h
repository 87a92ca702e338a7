// Torch-free C++ API of the sampler step kernels: one fused elementwise pass per sampler step. Params
// structs, dtype tags and errors as pid/dtype.h states for the whole API.
//
// Each reproduces, element by element and bit for bit, the PyTorch arithmetic of the samplers in
// pid/sampling.py (sample_student, sample_dpmpp_2m): the same operations, in the same order, each rounded
// once (no contraction into FMAs: the implementations are compiled with -ffp-contract=off or use
// explicitly rounded intrinsics). All tensors are dense arrays of n elements; x, eps, d_prev and the
// outputs are float32; the network output v is float32 or bfloat16 (up-cast exactly to float32).
// fl(.) below is one round-to-nearest-even to float32.
#pragma once

#include <cstdint>

#include "pid/dtype.h"

namespace pid {

// ---- 4-step student (SDE) --------------------------------------------------------------------
//   x0     = fl( double(x) − double(t)·double(v) )        float64 arithmetic, one rounding to float32
//   x_next = fl( fl(c·x0) + fl(t_next·eps) ),  c = fl(1 − t_next)      (eps != nullptr)
//   x_next = x0                                                        (eps == nullptr: last step)
// Dtypes: v float32 or bfloat16; every other array float32.
struct StudentStepParams {
  std::int64_t n;     // elements of every array
  const float* x;
  const void* v;
  DType v_dtype;      // float32 or bfloat16
  const float* eps;   // or nullptr: the last step
  float t, t_next;    // the float32 schedule entries
  float* x_next;
  float* x0_out;      // or nullptr; else it also receives x0
};

// ---- DPM-Solver++(2M) on the flow schedule -------------------------------------------------------
// Scalars computed by the caller in float32, as pid/sampling.py computes them on the host:
struct DpmStepCoeffs {
  float guidance;        // s: v = v_u + s·(v_c − v_u) when v_u != nullptr (else v = v_c, s unused)
  float t;               // flow time of x (where v was evaluated)
  float t_ratio;         // t_next / t
  float alpha_phi;       // αφ = exp(log(1 − t_next))·expm1(−h), h = λ(t_next) − λ(t)
  float half_alpha_phi;  // 0.5·αφ           (second order only)
  float inv_r;           // 1/r, r = h_prev/h (second order only)
};
// Per element, all float32, in this order (u = fl(1 − t)):
//   v      = fl(v_u + fl(s·fl(v_c − v_u)))      or v_c
//   eps    = fl(fl(u·v) + x)                                 the reference's ε̂ first, then x̂0:
//   D      = fl(fl(x − fl(t·eps)) / u)
//   x_next = fl(fl(t_ratio·x) − fl(alpha_phi·D))                      first order (d_prev == nullptr)
//   x_next = fl(that − fl(half_alpha_phi·fl(inv_r·fl(D − d_prev))))   second order
// Writes D always, x_next unless it is nullptr (the final step to t = 0 lands exactly on D).
// Dtypes: v_c and v_u float32 or bfloat16, both the same; every other array float32.
struct DpmStepParams {
  std::int64_t n;        // elements of every array
  const float* x;
  const void* v_c;
  const void* v_u;       // or nullptr: no guidance
  DType v_dtype;         // of v_c and v_u: float32 or bfloat16
  const float* d_prev;   // or nullptr: first order
  DpmStepCoeffs coeffs;
  float* x_next;         // or nullptr: D only
  float* d;              // D
};

// CPU: OpenMP over elements. Synchronous.
void student_step_cpu(const StudentStepParams& p);
void dpm_step_cpu(const DpmStepParams& p);

// CUDA: every pointer in device memory; `stream` is a cudaStream_t. Asynchronous; returns the
// cudaError_t of the launch (0 = success).
int student_step_cuda(const StudentStepParams& p, void* stream);
int dpm_step_cuda(const DpmStepParams& p, void* stream);

}  // namespace pid
