"""The CPU kernels' instruction-set variants (csrc/include/pid/cpu_capability.h; chosen in
csrc/kernels/cpu/isa_select.cpp): chosen from the CPU's features, forced with PID_CPU_CAPABILITY, each giving the
results the op tests demand, and none leaking AVX code into what the other variants call."""

import os
import platform
import subprocess
import sys
from importlib.util import find_spec

import pytest

from pid import _extension

from conftest import REPO, needs_ext

# The tests that compare each kernel with its PyTorch reference (bit for bit where the kernels promise it): every
# kernel family's tests/test_ops_<family>.py, and the golden networks.
# Every family's numerics (the contract of tests/test_ops_contract.py holds whatever the variant: registration, fakes).
OP_TESTS = [*sorted(f"tests/{p.name}" for p in (REPO / "tests").glob("test_ops_*.py") if p.name != "test_ops_contract.py"),
            "tests/test_golden_net.py"]


def _forced(capability: str, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PID_CPU_CAPABILITY": capability}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


@needs_ext
def test_best_variant_chosen():
    runs = _extension.cpu_capabilities()
    if os.environ.get("PID_CPU_CAPABILITY"):
        assert _extension.cpu_capability() == os.environ["PID_CPU_CAPABILITY"]
    else:
        assert _extension.cpu_capability() == runs[-1], runs
    if runs == ["native"]:
        return
    assert runs[0] == "baseline"
    if platform.machine() == "x86_64":
        flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
        if " avx512bw " in flags and " avx512vl " in flags:
            assert runs == ["baseline", "avx2", "avx512"]
        elif " avx2 " in flags and " fma " in flags:
            assert runs == ["baseline", "avx2"]


@needs_ext
@pytest.mark.parametrize("name", ["bogus", "native", "avx512"])
def test_unusable_variant_is_a_load_error(name):
    if name in _extension.cpu_capabilities():
        pytest.skip(f"{name} runs here")
    r = _forced(name, "import pid._extension as e; print(e.available()); print(e.LOAD_ERROR)")
    assert r.returncode == 0, r.stderr
    available, error = r.stdout.splitlines()
    assert available == "False"
    assert error.startswith(f"pid: PID_CPU_CAPABILITY={name}: ") and "unset it or choose one of: baseline" in error


@needs_ext
@pytest.mark.parametrize("name", ["baseline", "avx2", "avx512"])
def test_forced_variant_passes_the_op_tests(name):
    """Every variant this CPU runs, but the one the rest of this run uses: the op tests in a process of its own."""
    if name not in _extension.cpu_capabilities():
        pytest.skip(f"this build or CPU has no {name} variant")
    if name == _extension.cpu_capability():
        pytest.skip(f"{name} is this process's variant: the op tests of this run cover it")
    check = _forced(name, "import pid._extension as e; print(e.cpu_capability())")
    assert check.stdout.strip() == name, check.stdout + check.stderr
    env = {**os.environ, "PID_CPU_CAPABILITY": name}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *OP_TESTS], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]


@needs_ext
@pytest.mark.skipif(platform.machine() != "x86_64", reason="the variants are x86-64's")
def test_no_avx_outside_the_wide_variants():
    if _extension.cpu_capability() == "native":
        pytest.skip("a PID_NATIVE_CPU=ON build runs only where it was built")
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "check_cpu_isa.py"), find_spec("pid._C").origin],
                       capture_output=True, text=True)
    if r.returncode == 2:
        pytest.skip(r.stderr.strip())
    assert r.returncode == 0, r.stdout + r.stderr
