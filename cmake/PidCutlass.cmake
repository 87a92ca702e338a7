# Locates the CUTLASS / CuTe headers (header-only: nothing is linked). Sets CUTLASS_INCLUDE_DIRS,
# or `_why` (the reason, for the caller's message) when they are not found. Sources, in order:
#  1. CUTLASS_INCLUDE_DIR (CMake or environment variable), or $CUTLASS_PATH/include (a checkout)
#  2. the nvidia-cutlass wheel installed for the build Python (with the extension) (pip install --no-deps nvidia-cutlass==4.2.0.0):
#     <site-packages>/cutlass_library/source/include, found with find_spec, so cutlass_library is not
#     imported and its runtime dependencies need not be installed
#  3. a wheel file, CUTLASS_WHEEL (CMake or environment variable): headers extracted into the build
#     directory (works offline, e.g. on a device machine)
set(_cutlass_fix "pip install --no-deps nvidia-cutlass==4.2.0.0 (or set CUTLASS_INCLUDE_DIR, CUTLASS_PATH or CUTLASS_WHEEL; or build without CUDA kernels: PID_CUDA=OFF)")
set(_cutlass_extract "${CMAKE_BINARY_DIR}/_cutlass")
set(_cutlass_sub "cutlass_library/source/include")

if(NOT CUTLASS_INCLUDE_DIR AND DEFINED ENV{CUTLASS_INCLUDE_DIR})
  set(CUTLASS_INCLUDE_DIR "$ENV{CUTLASS_INCLUDE_DIR}")
endif()
if(NOT CUTLASS_INCLUDE_DIR AND DEFINED ENV{CUTLASS_PATH})
  set(CUTLASS_INCLUDE_DIR "$ENV{CUTLASS_PATH}/include")
endif()
if(NOT CUTLASS_INCLUDE_DIR AND Python_EXECUTABLE)  # no Python in a torch-free build
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -c "import importlib.util as u, os, sys
sys.path[:0] = [p for p in os.environ.get('PID_TARGET_SITE', '').split(os.pathsep) if p]  # PidTorch.cmake
s = u.find_spec('cutlass_library')
print(os.path.join(s.submodule_search_locations[0], 'source', 'include') if s else '')"
    OUTPUT_VARIABLE CUTLASS_INCLUDE_DIR OUTPUT_STRIP_TRAILING_WHITESPACE)
endif()
if(NOT CUTLASS_INCLUDE_DIR)
  if(NOT CUTLASS_WHEEL AND DEFINED ENV{CUTLASS_WHEEL})
    set(CUTLASS_WHEEL "$ENV{CUTLASS_WHEEL}")
  endif()
  if(CUTLASS_WHEEL)
    if(NOT EXISTS "${CUTLASS_WHEEL}")
      message(FATAL_ERROR "pid: CUTLASS_WHEEL='${CUTLASS_WHEEL}' does not exist")
    endif()
    if(NOT EXISTS "${_cutlass_extract}/${_cutlass_sub}/cutlass/cutlass.h")
      message(STATUS "pid: extracting CUTLASS headers from ${CUTLASS_WHEEL}")
      file(ARCHIVE_EXTRACT INPUT "${CUTLASS_WHEEL}" DESTINATION "${_cutlass_extract}"
           PATTERNS "${_cutlass_sub}/*" "cutlass_library/source/tools/util/include/*")
    endif()
    set(CUTLASS_INCLUDE_DIR "${_cutlass_extract}/${_cutlass_sub}")
  endif()
endif()

set(CUTLASS_INCLUDE_DIRS "")
if(NOT CUTLASS_INCLUDE_DIR)
  set(_why "the CUTLASS headers were not found: ${_cutlass_fix}")
elseif(NOT EXISTS "${CUTLASS_INCLUDE_DIR}/cutlass/cutlass.h" OR NOT EXISTS "${CUTLASS_INCLUDE_DIR}/cute/tensor.hpp")
  set(_why "'${CUTLASS_INCLUDE_DIR}' holds no cutlass/cutlass.h and cute/tensor.hpp: ${_cutlass_fix}")
else()
  file(STRINGS "${CUTLASS_INCLUDE_DIR}/cutlass/version.h" _v REGEX "#define CUTLASS_(MAJOR|MINOR|PATCH) ")
  string(REGEX REPLACE "[^0-9;]" "" _v "${_v}")
  string(REPLACE ";" "." _v "${_v}")
  message(STATUS "pid: CUTLASS ${_v} headers at ${CUTLASS_INCLUDE_DIR}")
  set(CUTLASS_INCLUDE_DIRS "${CUTLASS_INCLUDE_DIR}")
  # cutlass/util/*.hpp (e.g. packed_stride.hpp for CUTLASS 3.x GEMMs) live in tools/util/include.
  get_filename_component(_u "${CUTLASS_INCLUDE_DIR}/../tools/util/include" ABSOLUTE)
  if(EXISTS "${_u}/cutlass/util")
    list(APPEND CUTLASS_INCLUDE_DIRS "${_u}")
  endif()
endif()
