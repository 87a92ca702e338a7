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
  static void student_step(const StudentStepParams& p, const c10::Device& device) {
    C10_CUDA_CHECK(static_cast<cudaError_t>(student_step_cuda(p, current_stream(device))));
  }
  static void dpm_step(const DpmStepParams& p, const c10::Device& device) {
    C10_CUDA_CHECK(static_cast<cudaError_t>(dpm_step_cuda(p, current_stream(device))));
  }
};

}  // namespace
}  // namespace pid

TORCH_LIBRARY_IMPL(pid, CUDA, m) {
  m.impl("student_step", &pid::student_step_op<pid::Cuda>);
  m.impl("dpm_step", &pid::dpm_step_op<pid::Cuda>);
  m.impl("dpm_data_prediction", &pid::dpm_data_prediction_op<pid::Cuda>);
}
