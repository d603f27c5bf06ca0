"""The model's requirements.txt compared with the installed packages."""

from __future__ import annotations

import importlib.metadata as md
from pathlib import Path

from mlendpoints_serving.server.cli import without_option
from mlendpoints_serving.server.deps import requirement_mismatches


def test_mismatches_name_the_requirement_and_what_is_installed(tmp_path: Path) -> None:
    numpy = md.version("numpy")
    (tmp_path / "requirements.txt").write_text(
        f"numpy=={numpy}\n"
        "orjson==0.0.1  # pinned to a version nobody has\n"
        "mlendpoints-no-such-package==1.0\n"
        "pandas<1; python_version < '3'\n"
        "-r other.txt\n"
        "\n"
    )
    assert requirement_mismatches(tmp_path) == [
        f"orjson==0.0.1: installed {md.version('orjson')}",
        "mlendpoints-no-such-package==1.0: not installed",
    ]


def test_no_requirements_file_means_no_mismatch(tmp_path: Path) -> None:
    assert requirement_mismatches(tmp_path) == []


def test_the_env_manager_option_is_dropped_in_both_spellings() -> None:
    args = ["--model-dir", "/m", "--env-manager", "virtualenv", "--port", "1", "--env-manager=virtualenv"]
    assert without_option(args, "--env-manager") == ["--model-dir", "/m", "--port", "1"]
