#!/usr/bin/env bash
# On a lent GPU machine (no network; python3 with a CUDA torch, cmake, ninja, pytest, hypothesis):
# rebuild pid/_C there with CUDA kernels, run the C++ tests and the kernel tests (CUDA ones included) and
# print timing tables (attention at 2048^2 scale, L = 16384). Under 8 minutes: build ~1-2 min on 16
# cores; tests and the attention benchmark run under time caps (PYTEST_CAP, ATTN_BENCH_CAP seconds).
#
# Once, here: python3 -m pip download --no-deps nvidia-cutlass==4.2.0.0 -d third_party   (git-ignored)
# Then:       run(command="bash benchmarks/device/run.sh", carry=["third_party"], timeout_s=540)
# Env: PYTHON (default python3), PID_CUDA_ARCHS (default 90a: H100/H200).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
PY=$(command -v "${PYTHON:-python3}")
OUT_DIR=${OUT:-/tmp/pid-device}
mkdir -p "$OUT_DIR"
whl=$(ls third_party/nvidia_cutlass-*.whl 2>/dev/null | head -n 1 || true)
[ -n "$whl" ] || { echo "no third_party/nvidia_cutlass-*.whl: see the header of $0" >&2; exit 1; }

t0=$SECONDS
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$PY" -c 'import torch; print("python", __import__("sys").version.split()[0], "| torch", torch.__version__, "|", torch.cuda.get_device_name())'

echo "=== build"
cmake -S . -B build/device -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE="$PY" \
  -DPID_CUDA=ON -DPID_CUDA_ARCHS="${PID_CUDA_ARCHS:-90a}" -DPID_BUILD_TESTS=ON -DCUTLASS_WHEEL="$PWD/$whl"
cmake --build build/device -j "$(nproc)"
cp build/device/_C.so python/pid/_C.so  # found by find_spec('pid._C') with PYTHONPATH=python
export PYTHONPATH=$PWD/python
echo "=== build: $((SECONDS - t0)) s"

echo "=== tests"
ctest --test-dir build/device --output-on-failure
timeout "${PYTEST_CAP:-180}" "$PY" -m pytest -q -p no:cacheprovider tests/test_ops_sigma_gate.py \
  tests/test_ops_sampler_step.py tests/test_ops_attention.py tests/test_nn_attention.py \
  tests/test_ops_norm_modulate.py tests/test_nn_fused_norm.py 2>&1 | tee "$OUT_DIR/pytest.log" ||
  echo "=== pytest FAILED or stopped at the time cap: exit $? (see $OUT_DIR/pytest.log)"
echo "=== tests: $((SECONDS - t0)) s"

echo "=== benchmark"
for dt in bfloat16 float32; do
  "$PY" benchmarks/bench_sigma_gate.py --device cuda --dtype "$dt" --json "$OUT_DIR/bench_sigma_gate_$dt.json"
  "$PY" benchmarks/bench_sampler_step.py --device cuda --v-dtype "$dt" --json "$OUT_DIR/bench_sampler_step_$dt.json"
  "$PY" benchmarks/bench_norm_modulate.py --device cuda --mods-dtype "$dt" --json "$OUT_DIR/bench_norm_modulate_$dt.json"
done
"$PY" benchmarks/bench_sampler_step.py --device cuda --shape 1 3 4096 4096 --json "$OUT_DIR/bench_sampler_step_4k.json"
# The attention kernel is the simple CUDA-core one (no tensor cores yet): bf16 only, capped.
timeout "${ATTN_BENCH_CAP:-150}" "$PY" benchmarks/bench_attention.py --device cuda --dtype bfloat16 \
  --json "$OUT_DIR/bench_attention_bfloat16.json" || echo "bench_attention: exit $? (124: stopped at the time cap)"
echo "=== total: $((SECONDS - t0)) s"
