// How the torch-free API reports arguments a kernel does not support (pid/dtype.h): std::invalid_argument,
// thrown before any work. expect_unsupported runs f and says whether it threw that.
#pragma once

#include <cstdio>
#include <stdexcept>

namespace pid_test {

// 0 if f() throws std::invalid_argument (its message printed), else 1 (a failure, reported under `what`).
template <typename F>
int expect_unsupported(const char* what, F&& f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    std::printf("  rejected as expected: %s\n", e.what());
    return 0;
  }
  std::fprintf(stderr, "  %s: expected std::invalid_argument, nothing thrown\n", what);
  return 1;
}

}  // namespace pid_test
