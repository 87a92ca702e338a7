// The CUDA tensor-core per-channel gate (csrc/kernels/cuda/sigma_gate_mma.cuh) run on the CPU under cuda_emulator.h,
// against the double-precision loop and float32 bound of sigma_gate_expect.h: bfloat16 x, and float32 x split into
// three bfloat16 terms. CI has no GPU: this tests the kernel's own code for its tiles, edges, fragment layouts,
// pipeline, the split of x and the epilogue; a GPU run tests the rest.
#include "cuda_emulator.h"  // first: the CUDA keywords and warp primitives the kernel is written against

#include <type_traits>

#include "sigma_gate_expect.h"
#include "sigma_gate_mma.cuh"

namespace {

using namespace pid_test;
namespace kern = pid::mma_gate;

// max_tiles: token tiles per launch (kMaxTilesY on a GPU; small here to run the split into several launches).
template <typename X>
int check(std::int64_t B, std::int64_t L, std::int64_t D, unsigned seed, std::int64_t offset, std::int64_t max_tiles) {
  using XBits = std::conditional_t<sizeof(X) == 2, std::uint16_t, float>;  // the kernel's types: bfloat16 as bits
  auto gate = [&](const pid::SigmaGateParams& p) {
    const pid::SigmaGateSizes s = p.sizes;
    const auto* lq = static_cast<const std::uint16_t*>(p.lq);
    const auto* lql = static_cast<const std::uint16_t*>(p.lq_logit);
    const auto* w = static_cast<const std::uint16_t*>(p.w_x);
    const kern::Vectorised vec = kern::vectorised(p.x, int(sizeof(X)), w, s.D);
    kern::for_each_launch(s.B * s.L, s.D, max_tiles, [&](dim3 grid, std::int64_t row0) {
      pid::emu::launch(grid, kern::kThreads, [&] {
        kern::gate_kernel(static_cast<const XBits*>(p.x), lq, lql, w, p.alpha_sigma, static_cast<XBits*>(p.out), s,
                          row0, vec);
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
