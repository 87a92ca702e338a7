// Which instruction-set variant of the CPU kernels (the *_cpu functions of pid/*.h) runs. The results are the
// same whichever runs (each passes the same tests); only the speed differs. The build compiles every CPU kernel
// once per variant:
//   baseline  the compiler's default target (x86-64: SSE2; any other architecture: its default)
//   avx2      x86-64-v3: AVX2, FMA, BMI1/2, F16C, LZCNT, MOVBE (Haswell, Zen 1 and later)
//   avx512    x86-64-v4: AVX-512 F/BW/CD/DQ/VL (Skylake-SP, Ice Lake, Zen 4 and later)
//   native    -march=native, the only variant of a PID_NATIVE_CPU=ON build
// On the first call of any CPU kernel (or of a function below) the best variant that this build has and this CPU
// (and its OS) supports is chosen, unless the environment variable PID_CPU_CAPABILITY names one; then that one, or
// std::runtime_error if this build lacks it or this CPU cannot run it.
#pragma once

#include <string>

namespace pid {

// The variant in use, e.g. "avx512". Throws std::runtime_error when PID_CPU_CAPABILITY names a variant this build
// lacks or this CPU cannot run (and then so does every CPU kernel).
const char* cpu_capability();

// Whether this build has variant `name` and this CPU can run it.
bool cpu_capability_runs(const std::string& name);

// The variants this build has and this CPU can run, best last, comma-separated: "baseline,avx2,avx512".
std::string cpu_capabilities();

}  // namespace pid
