"""Checks benchmarks/device/run.sh's steps without a GPU, so that a typo does not cost a GPU session: every step of
each call is listed (`run.sh --list CALL`), every file a step names exists, and every Python command's arguments
are parsed by its own argument parser (the script is imported and stopped right after parsing: nothing runs).

    python benchmarks/device/check_steps.py verify speed build-only

Exits 1 naming each problem. Scripts without an argument parser (sanitize_ops.py) are only checked to exist; pytest
commands have their test files checked.
"""

from __future__ import annotations

import argparse
import os
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUN_SH = REPO / "benchmarks" / "device" / "run.sh"
STEPS_SH = REPO / "benchmarks" / "device" / "steps.sh"


class Parsed(Exception):
    """Raised instead of running a script once its arguments parsed."""


def list_steps(call: str) -> tuple[list[tuple[str, int, str]], dict[str, str]]:
    out = subprocess.run(["bash", str(RUN_SH), "--list", call], capture_output=True, text=True, check=True).stdout
    steps, env = [], {}
    for line in out.splitlines():
        if line.startswith("# var "):
            name, _, value = line[len("# var "):].partition("=")
            env[name] = value
        elif line.strip():
            name, cap, command = line.split("\t", 2)
            steps.append((name, int(cap), command))
    return steps, env


def python_commands(command: str, env: dict[str, str]) -> list[list[str]]:
    """The argument lists after `$PY` in a step's command, with its variables set as run.sh sets them (and
    `$(fa4_paths X)` as where FA4 is installed: X)."""
    command = re.sub(r"\$\(fa4_paths ([^)]*)\)", r"\1", command)
    values = {"PY": "PY", "STEP_JSON": "/tmp/step.json", "STEP_DIR": "/tmp", **env}
    expanded = re.sub(r"\$(\w+)", lambda m: values.get(m.group(1), m.group(0)), command)
    commands = []
    for segment in re.split(r";|&&|\|\||\|", expanded):
        words = shlex.split(segment)
        if "PY" in words:
            commands.append(words[words.index("PY") + 1:])
    return commands


def check_python(args: list[str]) -> list[str]:
    """Problems with one Python command (empty: none)."""
    while args and args[0] in ("-X", "-u", "-W"):
        args = args[2:] if args[0] in ("-X", "-W") else args[1:]
    if args[:2] == ["-m", "pytest"]:
        files = [a.split("::")[0] for a in args[2:] if not a.startswith("-") and (".py" in a or "/" in a)]
        return [f"pytest: no {f}" for f in files if not (REPO / f).is_file()] or ([] if files else ["pytest: no files"])
    if args[:2] == ["-m", "pid"]:
        return parse_only(lambda: runpy.run_module("pid", run_name="__main__", alter_sys=True), ["pid", *args[2:]])
    script = REPO / args[0]
    if not script.is_file():
        return [f"no {args[0]}"]
    if "argparse" not in script.read_text():
        return []
    return parse_only(lambda: runpy.run_path(str(script), run_name="__main__"), [str(script), *args[1:]])


def parse_only(run, argv: list[str]) -> list[str]:
    """Runs `run` with sys.argv = argv until its parser has parsed them; the parser's error, if any."""
    real_parse, real_argv = argparse.ArgumentParser.parse_args, sys.argv

    def parse_and_stop(self, args=None, namespace=None):
        real_parse(self, args, namespace)
        raise Parsed()
    argparse.ArgumentParser.parse_args = parse_and_stop
    sys.argv = argv
    try:
        run()
    except Parsed:
        return []
    except SystemExit as e:
        return [f"{' '.join(argv)}: its parser refused the arguments (exit {e.code})"]
    finally:
        argparse.ArgumentParser.parse_args, sys.argv = real_parse, real_argv
    return [f"{' '.join(argv)}: ran to the end without parsing arguments"]


def check_call(call: str) -> list[str]:
    helpers = set(re.findall(r"^(\w+)\(\) \{", STEPS_SH.read_text(), re.M))
    steps, env = list_steps(call)
    problems = [] if steps else [f"{call}: no steps"]
    names = [name for name, _, _ in steps]
    problems += [f"{call}: step {n} twice" for n in set(names) if names.count(n) > 1]
    for name, cap, command in steps:
        if cap <= 0:
            problems.append(f"{call} {name}: cap {cap}")
        for segment in re.split(r";|&&|\|\||\|", command):
            first = segment.split()[0] if segment.split() else ""
            if re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)+", first) and first not in helpers:
                problems.append(f"{call} {name}: {first} is not a function of steps.sh")
        for path in re.findall(r"\b(?:benchmarks|tests|third_party)/[\w./-]+", command):
            if not path.startswith("third_party/") and not (REPO / path.split("::")[0]).exists():
                problems.append(f"{call} {name}: no {path}")
        for args in python_commands(command, env):
            problems += [f"{call} {name}: {p}" for p in check_python(args)]
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("calls", nargs="+", choices=("verify", "speed", "build-only"))
    calls = ["--build-only" if c == "build-only" else c for c in ap.parse_args(argv).calls]
    sys.path.insert(0, str(REPO / "python"))
    os.chdir(REPO)
    problems = [p for call in calls for p in check_call(call)]
    for p in problems:
        print(f"run.sh: {p}")
    for call in calls:
        steps, _ = list_steps(call)
        print(f"run.sh {call}: {len(steps)} steps, caps {sum(cap for _, cap, _ in steps)} s in all"
              f"{'' if problems else ', every one checked'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
