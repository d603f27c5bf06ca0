"""The one scoring-script loader the model server and the batch driver share."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from mlendpoints_serving.batch.scoring import ScriptScorer
from mlendpoints_serving.contract import ENV_AZUREML_MODEL_DIR, ENV_MODEL_DIR, ENV_OUTPUT_DIR
from mlendpoints_serving.server.dataplane import load_scoring_script

SCRIPT = """
import os
import helpers  # a module shipped next to the script

def init():
    global seen
    seen = (os.environ["AZUREML_MODEL_DIR"], os.environ["MLENDPOINTS_MODEL_DIR"], helpers.PREFIX)

def run(data):
    return [helpers.PREFIX + str(len(data))]
"""


@pytest.fixture
def script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "helpers.py").write_text("PREFIX = 'n='\n")
    (folder / "score.py").write_text(SCRIPT)
    # The loader changes the process's environment and sys.path, as a worker's start-up does.
    for name in (ENV_AZUREML_MODEL_DIR, ENV_MODEL_DIR, ENV_OUTPUT_DIR):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "helpers", raising=False)
    return folder / "score.py"


def test_the_server_loads_a_script_that_imports_its_neighbours(script: Path, tmp_path: Path) -> None:
    module = load_scoring_script(script, tmp_path / "model")
    assert module.seen == (str(tmp_path / "model"), str(tmp_path / "model"), "n=")
    assert module.run("abc") == ["n=3"]


def test_batch_loads_the_same_script_the_same_way(script: Path, tmp_path: Path) -> None:
    scorer = ScriptScorer(str(script), str(tmp_path / "model"), "s3://bucket/out")
    assert scorer.module.seen == (str(tmp_path / "model"), str(tmp_path / "model"), "n=")
    assert os.environ[ENV_OUTPUT_DIR] == "s3://bucket/out"
    assert scorer.run(["a.csv", "b.csv"])["prediction"].tolist() == ["n=2"]


def test_a_script_without_run_names_the_entry_point_each_side_expects(tmp_path: Path) -> None:
    script = tmp_path / "empty.py"
    script.write_text("def init():\n    pass\n")
    with pytest.raises(ImportError, match=r"has no run\(raw_data\) function"):
        load_scoring_script(script, tmp_path)
    with pytest.raises(ImportError, match=r"has no run\(mini_batch\) function"):
        ScriptScorer(str(script), str(tmp_path), str(tmp_path))


@pytest.mark.parametrize("side", ["server", "batch"])
def test_azure_layout_gives_the_script_the_folder_above_the_model(
    script: Path, tmp_path: Path, side: str
) -> None:
    """Azure gives a script a model registered from folder `model` at AZUREML_MODEL_DIR/model: the
    operator fetches it into <mount>/model and passes <mount>; MLENDPOINTS_MODEL_DIR stays the model's."""
    model = tmp_path / "mount" / "model"
    if side == "server":
        seen = load_scoring_script(script, model, tmp_path / "mount").seen
    else:
        seen = ScriptScorer(str(script), str(model), "s3://bucket/out", str(tmp_path / "mount")).module.seen
    assert seen[:2] == (str(tmp_path / "mount"), str(model))
