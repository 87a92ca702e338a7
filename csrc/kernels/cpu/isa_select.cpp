// Selection of the CPU kernels' instruction-set variant at run time (pid/cpu_capability.h), and the public CPU
// kernel functions of pid/*.h: each calls its copy in the variant chosen once per process. Every CPU kernel source
// is compiled once per variant, into namespace pid::cpu_<variant> (CMakeLists.txt); this file is compiled for the
// baseline target only, like everything outside the variant objects, so nothing here executes an instruction the
// CPU may lack.
#include "pid/cpu_capability.h"

#include <cstdlib>
#include <stdexcept>
#include <string>

#include "pid/attention.h"
#include "pid/norm_modulate.h"
#include "pid/sampler_step.h"
#include "pid/sigma_gate.h"

// Every public CPU kernel: X(ns, function, params type), ns passed through (a new kernel family adds its lines here).
#define PID_CPU_KERNELS(X, ns)                        \
  X(ns, sigma_gate_cpu, SigmaGateParams)              \
  X(ns, sigma_gate_apply_cpu, SigmaGateApplyParams)   \
  X(ns, student_step_cpu, StudentStepParams)          \
  X(ns, dpm_step_cpu, DpmStepParams)                  \
  X(ns, qk_norm_rope_cpu, QkNormRopeParams)           \
  X(ns, attention_cpu, AttentionParams)               \
  X(ns, rms_norm_modulate_cpu, NormModulateParams)    \
  X(ns, gated_residual_cpu, GatedResidualParams)

// The variants this build compiled (CMakeLists.txt defines PID_CPU_HAS_<NAME> for each), declared per namespace.
#define PID_DECLARE(ns, fn, P) void fn(const P&);
#define PID_VARIANT_NAMESPACE(ns)  \
  namespace pid::ns {              \
  PID_CPU_KERNELS(PID_DECLARE, ns) \
  }
#ifdef PID_CPU_HAS_BASELINE
PID_VARIANT_NAMESPACE(cpu_baseline)
#endif
#ifdef PID_CPU_HAS_AVX2
PID_VARIANT_NAMESPACE(cpu_avx2)
#endif
#ifdef PID_CPU_HAS_AVX512
PID_VARIANT_NAMESPACE(cpu_avx512)
#endif
#ifdef PID_CPU_HAS_NATIVE
PID_VARIANT_NAMESPACE(cpu_native)
#endif

namespace pid {
namespace {

#define PID_POINTER(ns, fn, P) void (*fn)(const P&);
struct Variant {
  const char* name;
  PID_CPU_KERNELS(PID_POINTER, unused)
};

#define PID_ADDRESS(ns, fn, P) &ns::fn,
#define PID_VARIANT(name, ns) \
  Variant { name, PID_CPU_KERNELS(PID_ADDRESS, ns) }

// Worst first.
const Variant kVariants[] = {
#ifdef PID_CPU_HAS_BASELINE
    PID_VARIANT("baseline", cpu_baseline),
#endif
#ifdef PID_CPU_HAS_AVX2
    PID_VARIANT("avx2", cpu_avx2),
#endif
#ifdef PID_CPU_HAS_AVX512
    PID_VARIANT("avx512", cpu_avx512),
#endif
#ifdef PID_CPU_HAS_NATIVE
    PID_VARIANT("native", cpu_native),
#endif
};

// Whether this CPU runs variant `name`. GCC's and Clang's __builtin_cpu_supports also check that the OS saves the
// AVX / AVX-512 registers (XCR0 via xgetbv), so a feature the OS disabled counts as missing.
bool cpu_runs(const std::string& name) {
  if (name == "baseline" || name == "native") return true;  // native: built for this machine by its user
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
#if defined(__clang__)
  const bool v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                  __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2");
  const bool v4 = v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq") &&
                  __builtin_cpu_supports("avx512vl");
#else  // GCC >= 12 knows the x86-64 levels: exactly what -march=x86-64-v3 / -v4 may use
  const bool v3 = __builtin_cpu_supports("x86-64-v3");
  const bool v4 = __builtin_cpu_supports("x86-64-v4");
#endif
  if (name == "avx2") return v3;
  if (name == "avx512") return v4;
#endif
  return false;
}

const Variant* find(const std::string& name) {
  for (const Variant& v : kVariants)
    if (name == v.name) return &v;
  return nullptr;
}

const Variant& choose() {
  const char* env = std::getenv("PID_CPU_CAPABILITY");
  if (env && *env) {
    const Variant* v = find(env);
    if (!v || !cpu_runs(env))
      throw std::runtime_error(std::string("pid: PID_CPU_CAPABILITY=") + env +
                               (v ? ": this CPU cannot run it" : ": not a variant of this build") +
                               "; unset it or choose one of: " + cpu_capabilities());
    return *v;
  }
  const Variant* best = &kVariants[0];  // baseline, or native (then the only one): runs anywhere it was built for
  for (const Variant& v : kVariants)
    if (cpu_runs(v.name)) best = &v;
  return *best;
}

// Chosen on first use; a function-local static is initialised once, thread-safely (and retried if it threw).
const Variant& variant() {
  static const Variant& v = choose();
  return v;
}

}  // namespace

const char* cpu_capability() { return variant().name; }

bool cpu_capability_runs(const std::string& name) { return find(name) && cpu_runs(name); }

std::string cpu_capabilities() {
  std::string out;
  for (const Variant& v : kVariants)
    if (cpu_runs(v.name)) out += (out.empty() ? "" : ",") + std::string(v.name);
  return out;
}

#define PID_DEFINE(ns, fn, P) \
  void fn(const P& p) { variant().fn(p); }
PID_CPU_KERNELS(PID_DEFINE, unused)

}  // namespace pid
