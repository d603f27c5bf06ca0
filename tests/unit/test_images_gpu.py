"""The CPU serving image stays free of torch; the CUDA one adds it (issue 21). Read from the files that
decide it, without building: the extras in pyproject.toml and what images/build.sh installs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!;\[ ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_the_serving_extra_has_no_torch_and_the_torch_extra_is_apart() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert not {"torch", "torchvision", "triton"} & _names(extras["serving"])
    assert _names(extras["torch"]) == {"torch"}
    constraints = (ROOT / "constraints.txt").read_text().splitlines()
    assert any(line.startswith("torch==") for line in constraints), "torch is pinned"


def test_build_sh_installs_torch_only_into_the_cuda_variant() -> None:
    script = (ROOT / "images" / "build.sh").read_text()
    calls = re.findall(r"build_image serving (\S+) images/serving", script)
    assert sorted(calls) == ["serving", "serving,torch"]
    assert 'if [ "$VARIANT" = cuda ]; then build_image serving serving,torch' in script
    dockerfile = (ROOT / "images" / "serving" / "Dockerfile").read_text()
    # The last stage, the default target, is the CPU one; no CUDA base image.
    assert dockerfile.rstrip().splitlines()[-1] == "FROM runtime AS cpu"
    assert "nvidia/cuda" not in dockerfile and "nvidia/cuda" not in script
