// CPU implementation of the sampler step kernels (see pid/sampler_step.h). OpenMP over elements,
// one `omp simd` loop per variant (the variants are template parameters, so the loops have no
// branches). Compiled with -ffp-contract=off (CMakeLists.txt): every product and sum below is
// rounded separately, as PyTorch's eager kernels round them; an FMA would change the result.
#include "pid/sampler_step.h"
#include "../sampler_step_dtypes.h"
#include "load_store.h"

#include <cstdint>

// PID_CPU_NS: this file is compiled once per instruction-set variant (CMakeLists.txt), each into its own
// namespace; the public functions in namespace pid (isa_select.cpp) call the variant chosen at run time.
namespace pid::PID_CPU_NS {
namespace {

constexpr std::int64_t kParallelMinWork = 1 << 15;  // elements; below this threads cost more than they save

template <typename V, bool kEps, bool kX0>
void student(const float* __restrict x, const V* __restrict v, const float* __restrict eps, float t,
             float t_next, float* __restrict x_next, float* __restrict x0_out, std::int64_t n) {
  const double td = t;
  const float c = 1.0f - t_next;
#pragma omp parallel for simd schedule(static) if (n >= kParallelMinWork)
  for (std::int64_t i = 0; i < n; ++i) {
    const float x0 = static_cast<float>(static_cast<double>(x[i]) - td * static_cast<double>(ld(v + i)));
    if constexpr (kX0) x0_out[i] = x0;
    if constexpr (kEps)
      x_next[i] = c * x0 + t_next * eps[i];
    else
      x_next[i] = x0;
  }
}

// The specialisation for the optional operands given.
template <typename V>
void run_student(const float* x, const V* v, const float* eps, float t, float t_next, float* x_next,
                 float* x0_out, std::int64_t n) {
  if (n <= 0) return;
  if (eps && x0_out)
    student<V, true, true>(x, v, eps, t, t_next, x_next, x0_out, n);
  else if (eps)
    student<V, true, false>(x, v, eps, t, t_next, x_next, x0_out, n);
  else if (x0_out)
    student<V, false, true>(x, v, eps, t, t_next, x_next, x0_out, n);
  else
    student<V, false, false>(x, v, eps, t, t_next, x_next, x0_out, n);
}

// kOrder: 0 = D only, 1 = first-order update, 2 = second-order update.
template <typename V, bool kGuided, int kOrder>
void dpm(const float* __restrict x, const V* __restrict v_c, const V* __restrict v_u,
         const float* __restrict d_prev, DpmStepCoeffs k, float* __restrict x_next, float* __restrict d,
         std::int64_t n) {
  const float s = k.guidance, t = k.t, u = 1.0f - k.t, a = k.t_ratio, b = k.alpha_phi, c = k.half_alpha_phi;
  const float inv_r = k.inv_r;
#pragma omp parallel for simd schedule(static) if (n >= kParallelMinWork)
  for (std::int64_t i = 0; i < n; ++i) {
    const float xi = x[i];
    float vi = ld(v_c + i);
    if constexpr (kGuided) {
      const float vu = ld(v_u + i);
      vi = vu + s * (vi - vu);
    }
    const float e = u * vi + xi;
    const float di = (xi - t * e) / u;
    d[i] = di;
    if constexpr (kOrder >= 1) {
      float xn = a * xi - b * di;
      if constexpr (kOrder == 2) xn = xn - c * (inv_r * (di - d_prev[i]));
      x_next[i] = xn;
    }
  }
}

template <typename V, bool kGuided>
void dpm_order(const float* x, const V* v_c, const V* v_u, const float* d_prev, DpmStepCoeffs k,
               float* x_next, float* d, std::int64_t n) {
  if (!x_next)
    dpm<V, kGuided, 0>(x, v_c, v_u, d_prev, k, x_next, d, n);
  else if (!d_prev)
    dpm<V, kGuided, 1>(x, v_c, v_u, d_prev, k, x_next, d, n);
  else
    dpm<V, kGuided, 2>(x, v_c, v_u, d_prev, k, x_next, d, n);
}

template <typename V>
void run_dpm(const float* x, const V* v_c, const V* v_u, const float* d_prev, DpmStepCoeffs k, float* x_next,
             float* d, std::int64_t n) {
  if (n <= 0) return;
  if (v_u)
    dpm_order<V, true>(x, v_c, v_u, d_prev, k, x_next, d, n);
  else
    dpm_order<V, false>(x, v_c, v_u, d_prev, k, x_next, d, n);
}

}  // namespace

void student_step_cpu(const StudentStepParams& p) {
  with_sampler_step_dtypes<bf16>("pid::student_step_cpu", p, [&](auto v) {
    run_student(p.x, static_cast<const decltype(v)*>(p.v), p.eps, p.t, p.t_next, p.x_next, p.x0_out, p.n);
  });
}

void dpm_step_cpu(const DpmStepParams& p) {
  with_sampler_step_dtypes<bf16>("pid::dpm_step_cpu", p, [&](auto v) {
    using V = decltype(v);
    run_dpm(p.x, static_cast<const V*>(p.v_c), static_cast<const V*>(p.v_u), p.d_prev, p.coeffs, p.x_next, p.d, p.n);
  });
}

}  // namespace pid::PID_CPU_NS
