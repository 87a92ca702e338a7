// Every public header of the torch-free C++ API (csrc/include/pid/) in one translation unit: a C++ user
// may include any of them together. CMakeLists.txt also compiles each header alone in a translation unit
// of its own (each must be self-contained). Nothing to run beyond main.
#include "pid/attention.h"
#include "pid/bf16.h"
#include "pid/dtype.h"
#include "pid/norm_modulate.h"
#include "pid/sampler_step.h"
#include "pid/sigma_gate.h"

int main() { return 0; }
