// Torch-free test of the CUDA sigma gate API (pid/sigma_gate.h) on a GPU, with the double-precision loop and
// bound of sigma_gate_expect.h: per token and per channel (the tensor-core kernel for bfloat16 weights), every
// dtype combination, aligned and unaligned buffers. Exits 77 (skipped) without a GPU.
#include "cuda_device.h"
#include "sigma_gate_expect.h"

namespace {

using namespace pid_test;

template <typename X, typename P>
int check_cuda_gate(std::int64_t B, std::int64_t L, std::int64_t D, std::int64_t G, unsigned seed, std::int64_t offset) {
  auto gate = [&](const pid::SigmaGateParams& p) {  // on host arrays: run on device copies, copy the output back
    const pid::SigmaGateSizes s = p.sizes;
    const auto n = std::size_t(s.B * s.L * s.D), o = std::size_t(offset);
    DeviceArray<X> dx(static_cast<const X*>(p.x), n, o), dout(nullptr, n, o);
    DeviceArray<P> dlq(static_cast<const P*>(p.lq), n, o);
    DeviceArray<P> dlql(static_cast<const P*>(p.lq_logit), std::size_t(s.B * s.L * s.G), o);
    DeviceArray<P> dw(static_cast<const P*>(p.w_x), std::size_t(s.G * s.D), o);
    DeviceArray<float> da(p.alpha_sigma, std::size_t(s.B));
    pid::SigmaGateParams dp = p;
    dp.x = dx.get(), dp.lq = dlq.get(), dp.lq_logit = dlql.get(), dp.w_x = dw.get(), dp.alpha_sigma = da.get();
    dp.out = dout.get();
    check_cuda(pid::sigma_gate_cuda(dp, nullptr), "sigma_gate_cuda");
    check_cuda(cudaDeviceSynchronize(), "sigma_gate_cuda (run)");
    dout.copy_to(static_cast<X*>(p.out));
  };
  return check_gate<X, P>(B, L, D, G, seed, gate, offset);
}

}  // namespace

int main() {
  // Rejected before any launch, so checked with or without a GPU.
  auto gate = [](const pid::SigmaGateParams& p) { return pid::sigma_gate_cuda(p, nullptr); };
  auto apply = [](const pid::SigmaGateApplyParams& p) { return pid::sigma_gate_apply_cuda(p, nullptr); };
  if (check_gate_rejects(gate, apply) != 0) return 1;
  if (!cuda_device_present()) {
    std::printf("sigma_gate_cuda: no CUDA device, skipped\n");
    return kSkipped;
  }
  const std::int64_t shapes[][3] = {{1, 1, 1}, {1, 7, 3}, {2, 17, 33}, {3, 5, 64}, {1, 40, 129}, {2, 19, 300},
                                    {1, 64, 1536}};
  int failed = 0, cases = 0;
  unsigned seed = 1;
  for (const auto& sh : shapes)
    for (const std::int64_t G : {std::int64_t(1), sh[2]})
      for (const std::int64_t offset : {0, 1}) {
        failed += check_cuda_gate<float, float>(sh[0], sh[1], sh[2], G, seed++, offset) != 0;
        failed += check_cuda_gate<pid::bf16, pid::bf16>(sh[0], sh[1], sh[2], G, seed++, offset) != 0;
        failed += check_cuda_gate<float, pid::bf16>(sh[0], sh[1], sh[2], G, seed++, offset) != 0;
        cases += 3;
      }
  std::printf("sigma_gate_cuda: %d of %d cases passed\n", cases - failed, cases);
  return failed == 0 ? 0 : 1;
}
