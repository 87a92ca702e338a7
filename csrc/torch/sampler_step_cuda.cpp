// CUDA bindings of the sampler step ops: validate, allocate on x's device, launch on the current stream.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // not ATen/cuda/CUDAContext.h: it needs cuBLAS/cuSPARSE headers
#include <torch/library.h>

#include "sampler_step_check.h"

namespace pid {
namespace {

void* current_stream(const c10::Device& device) {
  return c10::cuda::getCurrentCUDAStream(device.index()).stream();
}

struct Cuda {
  using Guard = c10::cuda::CUDAGuard;
  template <typename V>
  static void student_step(const float* x, const V* v, const float* eps, float t, float t_next, float* x_next,
                           float* x0, std::int64_t n, const c10::Device& device) {
    const int err = student_step_cuda(x, v, eps, t, t_next, x_next, x0, n, current_stream(device));
    C10_CUDA_CHECK(static_cast<cudaError_t>(err));
  }
  template <typename V>
  static void dpm_step(const float* x, const V* v_c, const V* v_u, const float* d_prev, const DpmStepCoeffs& k,
                       float* x_next, float* d, std::int64_t n, const c10::Device& device) {
    const int err = dpm_step_cuda(x, v_c, v_u, d_prev, k, x_next, d, n, current_stream(device));
    C10_CUDA_CHECK(static_cast<cudaError_t>(err));
  }
};

}  // namespace
}  // namespace pid

TORCH_LIBRARY_IMPL(pid, CUDA, m) {
  m.impl("student_step", &pid::student_step_op<pid::Cuda>);
  m.impl("dpm_step", &pid::dpm_step_op<pid::Cuda>);
  m.impl("dpm_data_prediction", &pid::dpm_data_prediction_op<pid::Cuda>);
}
