// Torch-free test of the CUDA sigma gate API (pid/sigma_gate.h) on a GPU, with the double-precision loop and
// bound of sigma_gate_expect.h: per token and per channel (the tensor-core kernel for bfloat16 weights), every
// dtype combination, aligned and unaligned buffers. Exits 77 (skipped) without a GPU.
#include "cuda_device.h"
#include "sigma_gate_expect.h"

namespace {

using namespace pid_test;

template <typename X, typename P>
int check_cuda_gate(std::int64_t B, std::int64_t L, std::int64_t D, std::int64_t G, unsigned seed, std::int64_t offset) {
  auto gate = [&](const X* x, const P* lq, const P* lql, const P* w, const float* alpha, X* out, pid::SigmaGateSizes s) {
    const auto n = std::size_t(s.B * s.L * s.D), o = std::size_t(offset);
    DeviceArray<X> dx(x, n, o), dout(nullptr, n, o);
    DeviceArray<P> dlq(lq, n, o), dlql(lql, std::size_t(s.B * s.L * s.G), o), dw(w, std::size_t(s.G * s.D), o);
    DeviceArray<float> da(alpha, std::size_t(s.B));
    check_cuda(pid::sigma_gate_cuda(dx.get(), dlq.get(), dlql.get(), dw.get(), da.get(), dout.get(), s, nullptr),
               "sigma_gate_cuda");
    check_cuda(cudaDeviceSynchronize(), "sigma_gate_cuda (run)");
    dout.copy_to(out);
  };
  return check_gate<X, P>(B, L, D, G, seed, gate, offset);
}

}  // namespace

int main() {
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
