// Runs a test program with the CPU kernels forced to one instruction-set variant (PID_CPU_CAPABILITY), or skips
// it (exit 77) when this build or this CPU has no such variant. ctest runs each kernel test once per variant.
//
//   run_cpu_variant avx2 ./test_attention
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "pid/cpu_capability.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: run_cpu_variant VARIANT PROGRAM [ARGS...]\n");
    return 2;
  }
  if (!pid::cpu_capability_runs(argv[1])) {
    std::printf("skipped: variant %s does not run here (runs: %s)\n", argv[1], pid::cpu_capabilities().c_str());
    return 77;
  }
  setenv("PID_CPU_CAPABILITY", argv[1], 1);
  execv(argv[2], argv + 2);
  std::perror(argv[2]);
  return 2;
}
