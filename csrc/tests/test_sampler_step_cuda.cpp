// Torch-free test of the CUDA sampler step API (pid/sampler_step.h) on a GPU: every output bit-identical to the
// CPU API's (the contract fixes each operation and its rounding; test_sampler_step.cpp checks the CPU kernels
// against the formulas). Student and DPM-Solver++ steps, float32 and bfloat16 velocities, optional outputs and
// inputs, sizes that are not multiples of any vector width. Exits 77 (skipped) without a GPU.
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "cuda_device.h"
#include "expect_unsupported.h"
#include "pid/sampler_step.h"

namespace {

using namespace pid_test;

template <typename T> T make(float v);
template <> float make<float>(float v) { return v; }
template <> pid::bf16 make<pid::bf16>(float v) { return pid::float_to_bf16(v); }

int mismatches(const char* what, std::int64_t n, const std::vector<float>& got, const std::vector<float>& want) {
  int bad = 0;
  for (std::int64_t i = 0; i < n; ++i)
    if (std::memcmp(&got[i], &want[i], sizeof(float)) != 0 && bad++ < 3)
      std::fprintf(stderr, "  %s n=%lld [%lld]: cuda %.9g cpu %.9g\n", what, (long long)n, (long long)i, got[i], want[i]);
  return bad;
}

template <typename V>
std::vector<V> random_vector(std::mt19937& rng, std::int64_t n, float scale = 1.f) {
  std::normal_distribution<float> normal;
  std::vector<V> v(static_cast<std::size_t>(n));
  for (auto& e : v) e = make<V>(normal(rng) * scale);
  return v;
}

template <typename V>
int check_student(std::int64_t n, bool with_eps, bool with_x0, unsigned seed) {
  std::mt19937 rng(seed);
  const auto x = random_vector<float>(rng, n), eps = random_vector<float>(rng, n);
  const auto v = random_vector<V>(rng, n);
  const float t = 0.75f, t_next = 0.5f;
  const auto un = std::size_t(n);
  std::vector<float> next_cpu(un), x0_cpu(un), next_gpu(un), x0_gpu(un);
  pid::student_step_cpu({n, x.data(), v.data(), pid::dtype_of<V>(), with_eps ? eps.data() : nullptr, t, t_next,
                         next_cpu.data(), with_x0 ? x0_cpu.data() : nullptr});
  DeviceArray<float> dx(x.data(), un), deps(eps.data(), un), dnext(nullptr, un), dx0(nullptr, un);
  DeviceArray<V> dv(v.data(), un);
  check_cuda(pid::student_step_cuda({n, dx.get(), dv.get(), pid::dtype_of<V>(), with_eps ? deps.get() : nullptr, t,
                                     t_next, dnext.get(), with_x0 ? dx0.get() : nullptr},
                                    nullptr),
             "student_step_cuda");
  check_cuda(cudaDeviceSynchronize(), "student_step_cuda (run)");
  dnext.copy_to(next_gpu.data());
  int bad = mismatches("student x_next", n, next_gpu, next_cpu);
  if (with_x0) {
    dx0.copy_to(x0_gpu.data());
    bad += mismatches("student x0", n, x0_gpu, x0_cpu);
  }
  return bad;
}

template <typename V>
int check_dpm(std::int64_t n, bool guided, bool second_order, bool final_step, unsigned seed) {
  std::mt19937 rng(seed);
  const auto x = random_vector<float>(rng, n), d_prev = random_vector<float>(rng, n);
  const auto v_c = random_vector<V>(rng, n), v_u = random_vector<V>(rng, n);
  const pid::DpmStepCoeffs k{4.5f, 0.8f, 0.75f, -0.31f, -0.155f, 1.7f};
  const auto un = std::size_t(n);
  std::vector<float> next_cpu(un), d_cpu(un), next_gpu(un), d_gpu(un);
  pid::dpm_step_cpu({n, x.data(), v_c.data(), guided ? v_u.data() : nullptr, pid::dtype_of<V>(),
                     second_order ? d_prev.data() : nullptr, k, final_step ? nullptr : next_cpu.data(), d_cpu.data()});
  DeviceArray<float> dx(x.data(), un), dprev(d_prev.data(), un), dnext(nullptr, un), dd(nullptr, un);
  DeviceArray<V> dvc(v_c.data(), un), dvu(v_u.data(), un);
  check_cuda(pid::dpm_step_cuda({n, dx.get(), dvc.get(), guided ? dvu.get() : nullptr, pid::dtype_of<V>(),
                                 second_order ? dprev.get() : nullptr, k, final_step ? nullptr : dnext.get(), dd.get()},
                                nullptr),
             "dpm_step_cuda");
  check_cuda(cudaDeviceSynchronize(), "dpm_step_cuda (run)");
  dd.copy_to(d_gpu.data());
  int bad = mismatches("dpm D", n, d_gpu, d_cpu);
  if (!final_step) {
    dnext.copy_to(next_gpu.data());
    bad += mismatches("dpm x_next", n, next_gpu, next_cpu);
  }
  return bad;
}

}  // namespace

int main() {
  // Rejected before any launch, so checked with or without a GPU: a velocity tag that is no DType.
  const auto bad_tag = static_cast<pid::DType>(5);
  int rejected = expect_unsupported("student_step_cuda, v_dtype 5", [&] {
    pid::student_step_cuda({1, nullptr, nullptr, bad_tag, nullptr, 0.5f, 0.25f, nullptr, nullptr}, nullptr);
  });
  rejected += expect_unsupported("dpm_step_cuda, v_dtype 5", [&] {
    pid::dpm_step_cuda({1, nullptr, nullptr, nullptr, bad_tag, nullptr, {}, nullptr, nullptr}, nullptr);
  });
  if (rejected != 0) return 1;
  if (!cuda_device_present()) {
    std::printf("sampler_step_cuda: no CUDA device, skipped\n");
    return kSkipped;
  }
  int failed = 0, cases = 0;
  unsigned seed = 1;
  for (const std::int64_t n : {std::int64_t(1), std::int64_t(7), std::int64_t(1000), std::int64_t(3 * 2048 * 17 + 3)})
    for (int flags = 0; flags < 4; ++flags) {
      const bool a = flags & 1, b = flags & 2;
      failed += check_student<float>(n, a, b, seed++) != 0;
      failed += check_student<pid::bf16>(n, a, b, seed++) != 0;
      failed += check_dpm<float>(n, a, b, false, seed++) != 0;
      failed += check_dpm<pid::bf16>(n, a, b, a && !b, seed++) != 0;
      cases += 4;
    }
  std::printf("sampler_step_cuda: %d of %d cases passed (bit-identical to the CPU API)\n", cases - failed, cases);
  return failed == 0 ? 0 : 1;
}
