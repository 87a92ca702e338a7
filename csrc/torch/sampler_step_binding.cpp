// CPU bindings of the sampler step ops: validate, allocate, call the torch-free kernels.
#include <torch/library.h>

#include "sampler_step_check.h"

namespace pid {
namespace {

struct Cpu {
  struct Guard {
    explicit Guard(const c10::Device&) {}
  };
  static void student_step(const StudentStepParams& p, const c10::Device&) { student_step_cpu(p); }
  static void dpm_step(const DpmStepParams& p, const c10::Device&) { dpm_step_cpu(p); }
};

}  // namespace
}  // namespace pid

TORCH_LIBRARY_IMPL(pid, CPU, m) {
  m.impl("student_step", &pid::student_step_op<pid::Cpu>);
  m.impl("dpm_step", &pid::dpm_step_op<pid::Cpu>);
  m.impl("dpm_data_prediction", &pid::dpm_data_prediction_op<pid::Cpu>);
}
