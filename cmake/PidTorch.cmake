# Finds the torch of the Python doing the build (build without isolation: the venv's torch; with pip's
# isolation, build_backend/pid_build.py names the target environment's site-packages in $PID_TARGET_SITE) and
# defines INTERFACE targets pid_torch (CPU libraries) and, for a CUDA torch, pid_torch_cuda.
# Sets PID_TORCH_VERSION, PID_TORCH_HAS_CUDA.
#
# Hand-made rather than find_package(Torch): TorchConfig.cmake of a CUDA torch fails without a full
# CUDA toolkit even for CPU-only builds, and with the partial toolkit here needs several work-arounds.
# No libtorch_python: the library then does not depend on the Python version, only on torch's.
execute_process(
  COMMAND "${Python_EXECUTABLE}" -c "import os, sys
sys.path[:0] = [p for p in os.environ.get('PID_TARGET_SITE', '').split(os.pathsep) if p]
import torch
print(os.path.dirname(torch.__file__), torch.__version__, int(torch.version.cuda is not None), int(torch._C._GLIBCXX_USE_CXX11_ABI), sep=';')"
  OUTPUT_VARIABLE _pid_torch OUTPUT_STRIP_TRAILING_WHITESPACE
  ERROR_VARIABLE _pid_torch_err
  RESULT_VARIABLE _pid_torch_rc)
if(NOT _pid_torch_rc EQUAL 0)
  # The fix first: a build never goes on without the extension.
  message(FATAL_ERROR "pid: 'import torch' failed: install torch first, then: pip install --no-build-isolation .\n"
    "(or bash scripts/setup.sh). ${Python_EXECUTABLE}: ${_pid_torch_err}")
endif()
list(GET _pid_torch 0 _pid_torch_dir)
list(GET _pid_torch 1 PID_TORCH_VERSION)
list(GET _pid_torch 2 PID_TORCH_HAS_CUDA)
list(GET _pid_torch 3 _pid_torch_abi)
message(STATUS "pid: torch ${PID_TORCH_VERSION} (CUDA: ${PID_TORCH_HAS_CUDA}) at ${_pid_torch_dir}")

set(_l "${_pid_torch_dir}/lib")
add_library(pid_torch INTERFACE)
target_include_directories(pid_torch SYSTEM INTERFACE "${_pid_torch_dir}/include")
target_compile_definitions(pid_torch INTERFACE _GLIBCXX_USE_CXX11_ABI=${_pid_torch_abi})
target_link_libraries(pid_torch INTERFACE "${_l}/libtorch_cpu.so" "${_l}/libc10.so")
if(PID_TORCH_HAS_CUDA)
  add_library(pid_torch_cuda INTERFACE)
  target_link_libraries(pid_torch_cuda INTERFACE "${_l}/libtorch_cuda.so" "${_l}/libc10_cuda.so")
endif()
