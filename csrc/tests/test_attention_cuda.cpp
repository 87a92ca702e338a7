// Torch-free test of the CUDA attention API (pid/attention.h) on a GPU, with the double-precision attention and
// bound of attention_expect.h: bfloat16 (tensor cores; the bound allows its bfloat16 softmax weights) and
// float32, head_dim 64 and 72, global and windowed with text, image queries only, padded strides. Exits 77
// (skipped) without a GPU.
#include "attention_expect.h"
#include "cuda_device.h"
#include "expect_unsupported.h"

namespace {

using namespace pid_test;

// Elements spanned by a [B, H, S, D] view with these strides.
std::size_t extent(const pid::AttentionParams& p, const pid::AttentionStrides& s, long S) {
  return std::size_t((p.B - 1) * s.b + (p.H - 1) * s.h + (S - 1) * s.s + p.D);
}

// p on host arrays: runs attention_cuda on device copies of them, and copies the output back into p.o.
template <typename T>
void run_cuda(const pid::AttentionParams& p) {
  DeviceArray<T> dq(static_cast<const T*>(p.q), extent(p, p.q_stride, p.Sq));
  DeviceArray<T> dk(static_cast<const T*>(p.k), extent(p, p.k_stride, p.Sk));
  DeviceArray<T> dv(static_cast<const T*>(p.v), extent(p, p.v_stride, p.Sk));
  DeviceArray<T> dout(nullptr, extent(p, p.o_stride, p.Sq));
  pid::AttentionParams dp = p;
  dp.q = dq.get(), dp.k = dk.get(), dp.v = dv.get(), dp.o = dout.get();
  check_cuda(pid::attention_cuda(dp, nullptr), "attention_cuda");
  check_cuda(cudaDeviceSynchronize(), "attention_cuda (run)");
  dout.copy_to(static_cast<T*>(p.o));
}

}  // namespace

int main() {
  // Rejected before any launch, so checked with or without a GPU: head_dim 80, a tag that is no DType.
  pid::AttentionParams p{};
  p.B = p.H = p.Sq = p.Sk = 1, p.D = 80, p.dtype = pid::DType::kBFloat16;
  int rejected = expect_unsupported("attention_cuda, head_dim 80", [&] { pid::attention_cuda(p, nullptr); });
  p.D = 64, p.dtype = static_cast<pid::DType>(9);
  rejected += expect_unsupported("attention_cuda, dtype 9", [&] { pid::attention_cuda(p, nullptr); });
  if (rejected != 0) return 1;
  if (!cuda_device_present()) {
    std::printf("attention_cuda: no CUDA device, skipped\n");
    return kSkipped;
  }
  // The emulated test's cases, then two of the network's sizes: joint text + 1024 image tokens, and windowed.
  std::vector<PaddedCase> cases(std::begin(kCudaHeadDimCases), std::end(kCudaHeadDimCases));
  cases.push_back({{1, 3, 1324, 1324, 64, 0, 0, 0, 300}, 0});
  cases.push_back({{1, 2, 1024, 1024, 72, 9, 32, 32, 0}, 0});
  int failed = 0, n = 0;
  unsigned seed = 1;
  for (const PaddedCase& pc : cases) {
    failed += check_attention<pid::bf16>(pc.c, seed++, run_cuda<pid::bf16>, /*bf16_weights=*/true, pc.pad) != 0;
    failed += check_attention<float>(pc.c, seed++, run_cuda<float>, /*bf16_weights=*/false, pc.pad) != 0;
    n += 2;
  }
  std::printf("attention_cuda: %d of %d cases passed\n", n - failed, n);
  return failed == 0 ? 0 : 1;
}
