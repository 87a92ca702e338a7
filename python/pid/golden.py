"""Reference parity cases ("goldens", see shared/golden/FORMAT.md): finding, reading and scoring them."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Optional

import torch

ENV_VAR = "PID_GOLDEN_DIR"


def find_golden_dir(*extra_candidates: "str | os.PathLike") -> Optional[Path]:
    """$PID_GOLDEN_DIR if set, else the first existing candidate folder that holds a FORMAT.md."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    for cand in (*extra_candidates, Path.cwd() / "../shared/golden", Path.cwd() / "shared/golden"):
        if (Path(cand) / "FORMAT.md").is_file():
            return Path(cand).resolve()
    return None


@dataclass
class GoldenCase:
    name: str
    folder: Path

    @cached_property
    def meta(self) -> dict:
        return json.loads((self.folder / f"{self.name}.json").read_text())

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @cached_property
    def io(self) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(str(self.folder / self.meta["io_file"]))

    @property
    def weights_path(self) -> Path:
        return self.folder / self.meta["weights_file"]

    @property
    def ckpt_path(self) -> Optional[Path]:
        name = self.meta.get("ckpt_file")
        return self.folder / name if name else None

    def weights(self) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(str(self.weights_path))


def list_cases(folder: "str | os.PathLike", kind: Optional[str] = None) -> list[GoldenCase]:
    folder = Path(folder)
    cases = [GoldenCase(p.stem, folder) for p in sorted(folder.glob("*.json"))]
    return [c for c in cases if kind is None or c.kind == kind]


def errors(out: torch.Tensor, ref: torch.Tensor, scale: float) -> dict[str, float]:
    """‖out − ref‖/‖ref‖, and max/mean |out − ref| divided by `scale` (the case's output_max_abs)."""
    diff = (out.double() - ref.double()).abs()
    return {"rel_l2": (diff.norm() / ref.double().norm()).item(), "max_abs_rel": diff.max().item() / scale,
            "mean_abs_rel": diff.mean().item() / scale}


def run_net_case(case: GoldenCase, net: torch.nn.Module, plan=None) -> torch.Tensor:
    """The case's reference call `net(x, t, y, lq_latent=..., degrade_sigma=...)`, under `plan` (an ExecutionPlan;
    default float32 with pid's kernels)."""
    io = case.io
    with torch.no_grad():
        return net(io["x"], io["t"], io["y"], lq_latent=io["lq_latent"], degrade_sigma=io["degrade_sigma"], plan=plan)
