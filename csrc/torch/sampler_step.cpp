// CPU bindings of the sampler step ops: validate, allocate, call the torch-free kernels.
#include <torch/library.h>

#include "sampler_step_check.h"

namespace pid {
namespace {

struct Cpu {
  struct Guard {
    explicit Guard(const c10::Device&) {}
  };
  template <typename V>
  static void student_step(const float* x, const V* v, const float* eps, float t, float t_next, float* x_next,
                           float* x0, std::int64_t n, const c10::Device&) {
    student_step_cpu(x, v, eps, t, t_next, x_next, x0, n);
  }
  template <typename V>
  static void dpm_step(const float* x, const V* v_c, const V* v_u, const float* d_prev, const DpmStepCoeffs& k,
                       float* x_next, float* d, std::int64_t n, const c10::Device&) {
    dpm_step_cpu(x, v_c, v_u, d_prev, k, x_next, d, n);
  }
};

}  // namespace
}  // namespace pid

TORCH_LIBRARY_IMPL(pid, CPU, m) {
  m.impl("student_step", &pid::student_step_op<pid::Cpu>);
  m.impl("dpm_step", &pid::dpm_step_op<pid::Cpu>);
  m.impl("dpm_data_prediction", &pid::dpm_data_prediction_op<pid::Cpu>);
}
