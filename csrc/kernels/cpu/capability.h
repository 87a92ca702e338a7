// Which instruction-set variant of the CPU kernels runs (cpu_dispatch.cpp). Private to pid: the torch binding
// reports it (torch.ops.pid.cpu_capability) and the C++ tests force each variant; the public API in
// csrc/include/pid/ is the same whichever variant runs.
//
// The build compiles every CPU kernel source once per variant (CMakeLists.txt):
//   baseline  the compiler's default target (x86-64: SSE2; any other architecture: its default)
//   avx2      x86-64-v3: AVX2, FMA, BMI1/2, F16C, LZCNT, MOVBE (Haswell, Zen 1 and later)
//   avx512    x86-64-v4: AVX-512 F/BW/CD/DQ/VL (Skylake-SP, Ice Lake, Zen 4 and later)
//   native    -march=native, the only variant of a PID_NATIVE_CPU=ON build
// On first use the best variant this build has and this CPU (and its OS) supports is chosen, unless the
// environment variable PID_CPU_CAPABILITY names one; then that one, or std::runtime_error if it cannot run.
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
