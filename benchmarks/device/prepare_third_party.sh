#!/usr/bin/env bash
# Run HERE (a machine with network), once, before a GPU session: fills the git-ignored third_party/ with what
# benchmarks/device/run.sh needs on a lent GPU machine, which has no network and receives at most 64 MiB a call
# (the working tree plus the carried folders). Four carry folders:
#
#   third_party/device  ~1.5 MB  the CUTLASS 4.2.0 headers (xz), the serve extra's pure-Python wheels      both calls
#   third_party/golden  ~41 MB   the public golden cases (networks, inputs, outputs; no .ckpt.pth)          verify
#   third_party/fa4-a   ~10 MB   FlashAttention-4 and its CuTe DSL for CPython 3.12 / CUDA 13, part 1 of 2  verify
#   third_party/fa4-b   ~60 MB   ... part 2 of 2, with the archive's SHA-256                                 speed
#
# The FA4 stack (flash-attn-4 4.0.0b40, nvidia-cutlass-dsl 4.8.1 with its cu13 libraries, quack-kernels,
# apache-tvm-ffi, torch-c-dlpack-ext; einops, cuda-bindings, protobuf and typing-extensions are in the device image)
# unpacks to ~270 MB: its MLIR compiler alone is a 193 MB library. Packed with xz it is still ~70 MB, more than one
# call carries, so it travels in two parts: `run.sh verify` stages part 1 on the machine (build/, kept while the
# machine stays warm: 30 s after a call), `run.sh speed` brings part 2 and unpacks both. Run speed right after
# verify; on a fresh machine speed skips FA4 and says so.
#
#   bash benchmarks/device/prepare_third_party.sh        # ~10 min (xz -9 of the FA4 stack on 2 cores), then
#   bash benchmarks/device/run.sh --list verify           # what the calls run (no GPU needed)
# Env: PIP (default: python3 -m pip), PID_GOLDEN_DIR (default ../shared/golden), FA4_PART2_BYTES (default 60000000).
set -euo pipefail
cd "$(dirname "$0")/../.."
PIP=${PIP:-python3 -m pip}
GOLDEN=${PID_GOLDEN_DIR:-../shared/golden}
MIB64=$((64 * 1024 * 1024))
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
download() {  # download DIR SPEC...: binary wheels for the device's CPython 3.12 on x86-64, no dependencies
  local dir=$1
  shift
  $PIP download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d "$dir" "$@"
}

echo "=== third_party/device: CUTLASS headers, serve wheels"
rm -rf third_party/device && mkdir -p third_party/device/wheels
download "$TMP/cutlass" nvidia-cutlass==4.2.0.0
(cd "$TMP/cutlass" && unzip -q nvidia_cutlass-4.2.0.0-*.whl 'cutlass_library/source/include/*')
tar -C "$TMP/cutlass/cutlass_library/source" -cf - include | xz -9 -T0 > third_party/device/cutlass-include.tar.xz
download third_party/device/wheels starlette==1.10.0 uvicorn==0.55.0  # anyio, click, h11: in the image

echo "=== third_party/golden: the public cases from $GOLDEN"
[ -f "$GOLDEN/FORMAT.md" ] || { echo "no golden cases in $GOLDEN (set PID_GOLDEN_DIR)" >&2; exit 1; }
rm -rf third_party/golden && mkdir -p third_party/golden
cp "$GOLDEN"/FORMAT.md "$GOLDEN"/*.json "$GOLDEN"/*.io.safetensors "$GOLDEN"/*.weights.safetensors third_party/golden/

echo "=== third_party/fa4-a, fa4-b: the FlashAttention-4 stack, unpacked, xz, in two parts"
download "$TMP/fa4" flash-attn-4==4.0.0b40 nvidia-cutlass-dsl==4.8.1 nvidia-cutlass-dsl-libs-base==4.8.1 \
  nvidia-cutlass-dsl-libs-core==4.8.1 nvidia-cutlass-dsl-libs-cu13==4.8.1 quack-kernels==0.6.5 \
  apache-tvm-ffi==0.1.15.post2 torch-c-dlpack-ext==0.1.5
mkdir -p "$TMP/site"
for whl in "$TMP"/fa4/*.whl; do unzip -q -o "$whl" -d "$TMP/site"; done  # a wheel is its site-packages tree
tar -C "$TMP/site" -cf - . | nice xz -9 -T0 > "$TMP/fa4.tar.xz"
total=$(stat -c %s "$TMP/fa4.tar.xz")
part2=${FA4_PART2_BYTES:-60000000}
[ "$total" -gt "$part2" ] || part2=$((total / 2))
rm -rf third_party/fa4-a third_party/fa4-b && mkdir -p third_party/fa4-a third_party/fa4-b
head -c $((total - part2)) "$TMP/fa4.tar.xz" > third_party/fa4-a/fa4.tar.xz.part1
tail -c "$part2" "$TMP/fa4.tar.xz" > third_party/fa4-b/fa4.tar.xz.part2
(cd "$TMP" && sha256sum fa4.tar.xz) > third_party/fa4-b/SHA256SUMS
cp third_party/fa4-b/SHA256SUMS third_party/fa4-a/SHA256SUMS

echo "=== what each call carries (limit: 64 MiB with the working tree)"
tree_bytes=$(git ls-files -z -co --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s}')
ok=0
for call in "verify third_party/device third_party/golden third_party/fa4-a" "speed third_party/device third_party/fa4-b"; do
  set -- $call
  name=$1
  shift
  bytes=$((tree_bytes + $(du -cb "$@" | tail -n 1 | cut -f 1)))
  printf '  %-6s carry=[%s]: %s MiB of 64\n' "$name" "$(printf '"%s",' "$@" | sed 's/,$//')" \
    "$(awk -v b="$bytes" 'BEGIN {printf "%.1f", b / 1048576}')"
  [ "$bytes" -le "$MIB64" ] || { echo "  $name is over 64 MiB" >&2; ok=1; }
done
exit $ok
