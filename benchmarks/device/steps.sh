# The helpers of benchmarks/device/run.sh's steps: each step's command runs in `bash -c` after sourcing this file,
# from the repository root, with PY (the Python with a CUDA torch) and STEP_DIR / STEP_JSON (where the step writes)
# exported. Nothing here runs on its own.

skip() {  # skip REASON: end the step as skipped (exit 77), saying why
  echo "skipped: $*"
  exit 77
}

env_report() {  # the machine and the software the figures come from
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  "$PY" -c 'import sys, torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| CUDA", torch.version.cuda, "|",
      torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")'
  echo "$(nproc) CPUs; pid at $(git log -1 --format=%h 2>/dev/null || echo '?')"
}

untar_xz() {  # untar_xz ARCHIVE DEST: a .tar.xz unpacked by Python's tarfile (the image need not have xz)
  "$PY" - "$1" "$2" <<'PY'
import sys, tarfile
with tarfile.open(sys.argv[1], "r:xz") as archive:
    archive.extractall(sys.argv[2], **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
PY
}

build_pid() {  # pid/_C.so with the CUDA kernels and the C++ tests, CUTLASS headers from third_party (no network)
  local whl cutlass
  whl=$(ls third_party/nvidia_cutlass-*.whl 2>/dev/null | head -n 1)
  if [ -n "$whl" ]; then  # CI's dry run downloads the wheel there
    cutlass=(-DCUTLASS_WHEEL="$PWD/$whl")
  elif [ -f third_party/device/cutlass-include.tar.xz ]; then
    if [ ! -f build/cutlass/include/cutlass/cutlass.h ]; then
      mkdir -p build/cutlass && untar_xz third_party/device/cutlass-include.tar.xz build/cutlass || return 1
    fi
    cutlass=(-DCUTLASS_INCLUDE_DIR="$PWD/build/cutlass/include")
  else
    echo "no CUTLASS headers: run benchmarks/device/prepare_third_party.sh and carry third_party/device" >&2
    return 1
  fi
  cmake -S . -B build/device -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE="$PY" -DPID_CUDA=ON \
    -DPID_CUDA_ARCHS="${PID_CUDA_ARCHS:-90a}" -DPID_BUILD_TESTS=ON "${cutlass[@]}" &&
    cmake --build build/device -j "$(nproc)" &&
    cp build/device/_C.so python/pid/_C.so  # found by find_spec('pid._C') with PYTHONPATH=python
}

need_kernels() {  # the build step's result, for the steps that run pid's CUDA kernels
  [ -f python/pid/_C.so ] || skip "no pid/_C.so: the build step failed or did not run"
}

need_golden() {
  [ -n "${PID_GOLDEN_DIR:-}" ] || skip "no golden cases: carry third_party/golden (prepare_third_party.sh)"
}

serve_deps() {  # the serve extra's wheels that the image lacks (starlette, uvicorn), unpacked into build/
  "$PY" -c 'import starlette, uvicorn' 2>/dev/null && return 0
  ls third_party/device/wheels/*.whl > /dev/null 2>&1 || skip "no serve wheels: carry third_party/device"
  PIP_ROOT_USER_ACTION=ignore "$PY" -m pip install -q --no-index --no-deps --no-compile --target build/serve-site \
    third_party/device/wheels/*.whl
  export PYTHONPATH=$PWD/build/serve-site:$PYTHONPATH
}

# ---- FlashAttention-4: two parts of one archive (prepare_third_party.sh), staged in build/fa4-parts
stage_fa4_part() {  # stage_fa4_part FOLDER: keep a carried part on this machine for a later call
  ls "$1"/fa4.tar.xz.part* > /dev/null 2>&1 || skip "no FA4 part in $1 (prepare_third_party.sh; carry it)"
  mkdir -p build/fa4-parts && cp "$1"/fa4.tar.xz.part* "$1"/SHA256SUMS build/fa4-parts/ && ls -l build/fa4-parts
}

install_fa4() {  # unpack both parts into build/fa4-site and import it
  if [ -f build/fa4-site/.ready ]; then echo "FA4 already unpacked on this machine"; return 0; fi
  for part in third_party/fa4-a third_party/fa4-b; do
    ls "$part"/fa4.tar.xz.part* > /dev/null 2>&1 && { mkdir -p build/fa4-parts; cp "$part"/* build/fa4-parts/; }
  done
  [ -f build/fa4-parts/fa4.tar.xz.part1 ] || skip "FA4 part 1 is not on this machine: carry third_party/fa4-a with" \
    "run.sh verify and call speed within 30 s of it (the machine stays warm that long)"
  [ -f build/fa4-parts/fa4.tar.xz.part2 ] || skip "FA4 part 2 is not here: carry third_party/fa4-b"
  "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' || skip "FA4 was packed for CPython 3.12"
  (cd build/fa4-parts && cat fa4.tar.xz.part1 fa4.tar.xz.part2 > fa4.tar.xz && sha256sum -c SHA256SUMS) || return 1
  rm -rf build/fa4-site && mkdir -p build/fa4-site
  untar_xz build/fa4-parts/fa4.tar.xz build/fa4-site || return 1
  rm -f build/fa4-parts/fa4.tar.xz
  PYTHONPATH=$(fa4_pythonpath) "$PY" -c 'import flash_attn.cute, cutlass, torch
print("flash-attn-4 imports; CuTe DSL", getattr(cutlass, "__version__", "?"), "| torch", torch.__version__)' &&
    touch build/fa4-site/.ready
}

need_fa4() {
  [ -f build/fa4-site/.ready ] || skip "FlashAttention-4 is not installed on this machine (see the fa4-install step)"
}

fa4_pythonpath() {  # the unpacked site folder, and the DSL's packages (what its .pth adds in a real site-packages)
  echo "$PWD/build/fa4-site/nvidia_cutlass_dsl/dsl_packages:$PWD/build/fa4-site:$PYTHONPATH"
}

fa4_paths() {  # fa4_paths ,PATH@fa4,...: bench_decode's FA4 paths where FA4 is installed, else nothing
  [ -f build/fa4-site/.ready ] && echo "$1"
  return 0
}

if [ -f build/fa4-site/.ready ]; then  # every step sees FA4 once it is installed; its kernels compile once
  export PYTHONPATH=$(fa4_pythonpath)
  export FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED=1 FLASH_ATTENTION_CUTE_DSL_CACHE_DIR=$PWD/build/fa4-jit-cache
fi
