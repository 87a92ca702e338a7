// PID_HOST_DEVICE marks a function that the CPU kernels, the CUDA kernels and the CPU-emulated CUDA tests
// (csrc/tests/cuda_emulator.h) all call: __host__ __device__ under nvcc, nothing elsewhere. Private to the kernels.
#pragma once

#if defined(__CUDACC__)
#define PID_HOST_DEVICE __host__ __device__
#else
#define PID_HOST_DEVICE
#endif
