// The CUDA tensor-core per-channel gate (csrc/kernels/cuda/sigma_gate_mma.cuh) run on the CPU under cuda_emulator.h,
// against the double-precision loop and float32 bound of sigma_gate_expect.h: bfloat16 x, and float32 x split into
// three bfloat16 terms. CI has no GPU: this tests the kernel's own code for its tiles, edges, fragment layouts,
// pipeline, the split of x and the epilogue; a GPU run tests the rest.
#include "cuda_emulator.h"  // first: the CUDA keywords and warp primitives the kernel is written against

#include "sigma_gate_expect.h"
#include "sigma_gate_mma.cuh"

namespace {

using namespace pid_test;
namespace kern = pid::mma_gate;

const float* raw(const float* p) { return p; }
float* raw(float* p) { return p; }
const std::uint16_t* raw(const pid::bf16* p) { return reinterpret_cast<const std::uint16_t*>(p); }
std::uint16_t* raw(pid::bf16* p) { return reinterpret_cast<std::uint16_t*>(p); }

// max_tiles: token tiles per launch (kMaxTilesY on a GPU; small here to run the split into several launches).
template <typename X>
int check(std::int64_t B, std::int64_t L, std::int64_t D, unsigned seed, std::int64_t offset, std::int64_t max_tiles) {
  auto gate = [&](const X* x, const pid::bf16* lq, const pid::bf16* lql, const pid::bf16* w, const float* alpha, X* out,
                  pid::SigmaGateSizes s) {
    const kern::Vectorised vec = kern::vectorised(x, int(sizeof(X)), w, s.D);
    kern::for_each_launch(s.B * s.L, s.D, max_tiles, [&](dim3 grid, std::int64_t row0) {
      pid::emu::launch(grid, kern::kThreads, [&] {
        kern::gate_kernel(raw(x), raw(lq), raw(lql), raw(w), alpha, raw(out), s, row0, vec);
      });
    });
  };
  return check_gate<X, pid::bf16>(B, L, D, D, seed, gate, offset);
}

}  // namespace

int main() {
  struct Case {
    std::int64_t B, L, D, offset, max_tiles;
  };
  const Case cases[] = {
      {1, 1, 1, 0, 1},     {1, 7, 3, 0, 1},    {2, 17, 33, 0, 1},   {3, 5, 64, 0, 1},  {1, 40, 129, 0, 1},
      {2, 19, 100, 1, 1},  {1, 70, 72, 0, 1},  {1, 130, 40, 0, 1},  {1, 130, 40, 0, 2}, {2, 45, 64, 1, 1},
      {1, 66, 96, 0, 2},   {1, 9, 8, 3, 1},    {2, 33, 136, 0, 1},
  };
  int failed = 0, n = 0;
  unsigned seed = 1;
  for (const Case& c : cases) {
    failed += check<pid::bf16>(c.B, c.L, c.D, seed++, c.offset, c.max_tiles) != 0;
    failed += check<float>(c.B, c.L, c.D, seed++, c.offset, c.max_tiles) != 0;
    n += 2;
  }
  std::printf("sigma_gate_mma (CUDA tensor-core gate, emulated on the CPU): %d of %d cases passed\n", n - failed, n);
  return failed == 0 ? 0 : 1;
}
