// The CUDA tensor-core attention kernel (csrc/kernels/cuda/attention_mma.cuh) run on the CPU under
// cuda_emulator.h, against the naive double-precision attention and error bound of attention_expect.h
// (plus the bfloat16 rounding of the weights the kernel does). CI has no GPU: this tests the kernel's own
// code for its tiles, masks, windows, fragment layouts and online softmax; a GPU run tests the rest.
#include "cuda_emulator.h"  // first: the CUDA keywords and warp primitives the kernel is written against

#include "attention_expect.h"
#include "attention_mma.cuh"

namespace {

using namespace pid_test;
namespace mma = pid::mma_attention;

const std::uint16_t* raw(const void* x) { return static_cast<const std::uint16_t*>(x); }

void run_mma(const pid::AttentionParams& p) {
  const mma::Plan pl = mma::plan(p);
  auto* out = static_cast<std::uint16_t*>(p.o);
  pid::emu::launch(dim3{unsigned(pl.tiles), unsigned(p.B * p.H), 1}, mma::kThreads, [&] {
    if (p.D == 64)
      mma::attention_kernel<64>(raw(p.q), raw(p.k), raw(p.v), out, p, pl.wt, pl.vec);
    else
      mma::attention_kernel<72>(raw(p.q), raw(p.k), raw(p.v), out, p, pl.wt, pl.vec);
  });
}

}  // namespace

int main() {
  int failed = 0, n = 0;
  unsigned seed = 1;
  for (const PaddedCase& pc : kCudaHeadDimCases) {
    failed += check_attention<pid::bf16>(pc.c, seed++, run_mma, /*bf16_weights=*/true, pc.pad) != 0;
    ++n;
  }
  // Random cases: global with independent Sq, Sk, or windowed over random grids, text counts and windows.
  std::mt19937 rng(2026);
  auto pick = [&](long lo, long hi) { return std::uniform_int_distribution<long>(lo, hi)(rng); };
  for (int i = 0; i < 16; ++i) {
    Case c{pick(1, 2), pick(1, 2), 0, 0, pick(0, 1) ? 72 : 64, 0, 0, 0, 0};
    if (i % 2 == 0) {
      c.Sq = pick(1, 140), c.Sk = pick(1, 140);
    } else {
      c.gh = pick(1, 12), c.gw = pick(1, 12), c.n_text = pick(0, 1) ? pick(0, 70) : 0, c.window = pick(1, 13);
      c.Sk = c.n_text + c.gh * c.gw;
      c.Sq = pick(0, 1) ? c.Sk : c.Sk - c.n_text;
      if (c.Sq == 0) c.Sq = c.Sk;
    }
    const long pad = std::vector<long>{0, 0, 1, 8}[std::size_t(pick(0, 3))];
    failed += check_attention<pid::bf16>(c, seed++, run_mma, /*bf16_weights=*/true, pad) != 0;
    ++n;
  }
  std::printf("attention_mma (CUDA tensor-core kernel, emulated on the CPU): %d of %d cases passed\n", n - failed, n);
  return failed == 0 ? 0 : 1;
}
