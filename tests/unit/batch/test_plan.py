"""Mini-batch planning: every mini-batch goes to exactly one instance, whatever the instance count."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from mlendpoints_serving.batch.plan import fingerprint, mini_batches, share
from mlendpoints_serving.batch.settings import BatchSettings
from mlendpoints_serving.batch.storage import InputFile


def _files(n: int) -> list[InputFile]:
    return [InputFile(uri=f"/in/{i:04d}.csv", name=f"{i:04d}.csv", size=i) for i in range(n)]


@given(files=st.integers(0, 200), size=st.integers(1, 17), count=st.integers(1, 9))
def test_instances_share_the_mini_batches_exactly_once(files: int, size: int, count: int):
    batches = mini_batches(_files(files), size)
    assert [f for b in batches for f in b.files] == _files(files)
    assert all(1 <= len(b.files) <= size for b in batches)
    shares = [share(batches, i, count) for i in range(count)]
    assert sorted(b.index for s in shares for b in s) == list(range(len(batches)))


def test_the_fingerprint_changes_with_inputs_settings_and_model(diabetes_model: Path, iris_model: Path):
    base = BatchSettings(model_dir=str(diabetes_model), input="/in", output="/out")
    fp = fingerprint(_files(3), base)
    assert fp == fingerprint(_files(3), base.model_copy(update={"max_concurrency": 4, "instance_count": 2}))
    assert fp != fingerprint(_files(4), base)
    assert fp != fingerprint([*_files(2), InputFile(uri="/in/0002.csv", name="0002.csv", size=99)], base)
    assert fp != fingerprint(_files(3), base.model_copy(update={"mini_batch_size": 3}))
    assert fp != fingerprint(_files(3), base.model_copy(update={"model_dir": str(iris_model)}))
