"""benchmarks/device/run.sh, the prepared run for a lent GPU machine, checked here without a GPU: its two calls list
their steps, every file they name exists and every Python command's arguments parse (check_steps.py), and its step
runner keeps going past a failed step and leaves a summary and an archive of every log in $OUT."""

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEVICE = REPO / "benchmarks" / "device"

needs_bash = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="bash and coreutils' timeout")


@needs_bash
def test_scripts_are_valid_bash():
    for name in ("run.sh", "steps.sh", "prepare_third_party.sh"):
        subprocess.run(["bash", "-n", str(DEVICE / name)], check=True)


@needs_bash
def test_every_step_of_both_calls_checks_out():
    done = subprocess.run([sys.executable, str(DEVICE / "check_steps.py"), "verify", "speed", "build-only"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "run.sh verify: 12 steps" in done.stdout and "run.sh speed: 9 steps" in done.stdout


def _copy_scripts(tmp_path) -> Path:
    """run.sh and its helpers in an empty repository-shaped folder: nothing of this checkout is built or written."""
    (tmp_path / "benchmarks" / "device").mkdir(parents=True)
    for name in ("run.sh", "steps.sh"):
        shutil.copy(DEVICE / name, tmp_path / "benchmarks" / "device" / name)
    return tmp_path / "benchmarks" / "device" / "run.sh"


@needs_bash
def test_runner_goes_on_after_a_failure_and_leaves_its_results(tmp_path):
    run_sh, out = _copy_scripts(tmp_path), tmp_path / "out"
    done = subprocess.run(["bash", str(run_sh), "--build-only"], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "OUT": str(out), "PYTHON": sys.executable})
    assert done.returncode == 1, done.stdout + done.stderr
    summary = (out / "build-only-summary.txt").read_text().splitlines()
    assert [line.split()[0] for line in summary] == ["env", "build", "ctest"]  # ctest ran after the build failed
    assert "ok" in summary[0] and "FAILED" in summary[1] and "FAILED" in summary[2]
    with tarfile.open(out / "build-only-results.tar.gz") as archive:
        names = archive.getnames()
        build_log = archive.extractfile("build-only/build.log").read().decode()
    assert {"build-only/env.log", "build-only/build.log", "build-only/ctest.log", "build-only/summary.txt"} <= set(names)
    assert "no CUTLASS headers: run benchmarks/device/prepare_third_party.sh" in build_log


@needs_bash
def test_runner_keeps_to_its_budget(tmp_path):
    run_sh, out = _copy_scripts(tmp_path), tmp_path / "out"
    done = subprocess.run(["bash", str(run_sh), "verify"], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "OUT": str(out), "PYTHON": sys.executable, "BUDGET_S": "0"})
    assert done.returncode == 1
    summary = (out / "verify-summary.txt").read_text().splitlines()
    assert len(summary) == 12 and all("NOT RUN: the call's 0 s budget is spent" in line for line in summary)
