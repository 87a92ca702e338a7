// Device buffers for the torch-free tests of the CUDA API: copies of host arrays, and whether a GPU is there.
#pragma once

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

namespace pid_test {

constexpr int kSkipped = 77;  // ctest's SKIP_RETURN_CODE

inline bool cuda_device_present() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

inline void check_cuda(int err, const char* what) {
  if (err != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(static_cast<cudaError_t>(err)));
    std::exit(1);
  }
}

// `count` elements of T on the device, `offset` elements past a 256-byte aligned allocation (offset != 0: the
// kernels' unaligned paths), filled from host[0, count).
template <typename T>
class DeviceArray {
 public:
  DeviceArray(const T* host, std::size_t count, std::size_t offset = 0) : count_(count) {
    check_cuda(cudaMalloc(&base_, (count + offset) * sizeof(T) + 1), "cudaMalloc");
    data_ = static_cast<T*>(base_) + offset;
    if (host != nullptr) check_cuda(cudaMemcpy(data_, host, count * sizeof(T), cudaMemcpyHostToDevice), "to device");
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() { cudaFree(base_); }
  T* get() { return data_; }
  void copy_to(T* host) const {
    check_cuda(cudaMemcpy(host, data_, count_ * sizeof(T), cudaMemcpyDeviceToHost), "to host");
  }

 private:
  void* base_ = nullptr;
  T* data_ = nullptr;
  std::size_t count_;
};

}  // namespace pid_test
