"""Checks that a binary holding pid's CPU kernels (pid/_C.so, a C++ test) runs on a CPU without AVX: only the
avx2/avx512 variants' own functions (namespace pid::cpu_avx2 / pid::cpu_avx512) and functions local to their objects
may use AVX or BMI instructions. A global or weak one elsewhere (an inline function or template instance that the
linker merged by name) may be what the baseline code calls.

    python scripts/check_cpu_isa.py build/ctest/test_attention

Exit 0: clean; 1: the offending functions, one a line; 2: objdump or nm missing, or the binary is not x86-64.
Needs binutils' objdump and nm.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

# VEX/EVEX-encoded instructions (AVX and later: their mnemonics start with "v") and the scalar BMI1/BMI2/LZCNT/MOVBE
# instructions of x86-64-v3. Not tzcnt: it runs as bsf on CPUs without BMI1 (compilers emit it for that reason).
WIDE = re.compile(r"\t(v[a-z0-9]+|andn|bextr|blsi|blsmsk|blsr|bzhi|mulx|pdep|pext|rorx|sarx|shlx|shrx|lzcnt|movbe)\b")
VARIANT = re.compile(r"^pid::cpu_(avx2|avx512)::")


def offending(path: str) -> list[str]:
    # Non-local function symbols by address (nm: T global, W weak, i indirect); local ones are "t".
    nm = subprocess.run(["nm", "--defined-only", "-C", path], capture_output=True, text=True, check=True).stdout
    exported = {}
    for line in nm.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1] in ("T", "W", "i"):
            exported[int(parts[0], 16)] = parts[2]
    dump = subprocess.run(["objdump", "-d", "-C", "--no-show-raw-insn", path], capture_output=True, text=True,
                          check=True).stdout
    bad, current = set(), None
    for line in dump.splitlines():
        m = re.match(r"^([0-9a-f]+) <(.*)>:$", line)
        if m:
            address = int(m.group(1), 16)
            current = exported.get(address) if address in exported and not VARIANT.match(m.group(2)) else None
        elif current and WIDE.search(line):
            bad.add(current)
    return sorted(bad)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python scripts/check_cpu_isa.py BINARY", file=sys.stderr)
        return 2
    if not (shutil.which("objdump") and shutil.which("nm")):
        print("check_cpu_isa: objdump and nm (binutils) are needed", file=sys.stderr)
        return 2
    with open(argv[1], "rb") as f:
        head = f.read(20)
    if head[:4] != b"\x7fELF" or int.from_bytes(head[18:20], "little") != 62:  # e_machine EM_X86_64
        print(f"check_cpu_isa: {argv[1]} is not an x86-64 ELF binary", file=sys.stderr)
        return 2
    bad = offending(argv[1])
    for name in bad:
        print(f"{argv[1]}: {name}: AVX/BMI instructions in a shared (non-local) function outside pid::cpu_avx2/avx512")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
