"""Readers: chunks of a large file add up to the whole file, in order; unsupported types are named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlendpoints_serving.batch.readers import UnsupportedFile, kind, read_image, read_table


def _frame(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"a": rng.random(rows), "b": np.arange(rows), "c": [f"s{i}" for i in range(rows)]})


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_a_file_over_the_chunk_size_is_read_in_bounded_chunks(tmp_path: Path, suffix: str):
    frame = _frame(20_000)
    path = tmp_path / f"t{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".parquet":
        frame.to_parquet(path, row_group_size=2000)
    else:
        frame.to_json(path, orient="records", lines=True, double_precision=15)
    size = path.stat().st_size
    whole = list(read_table(str(path), size, chunk_bytes=size + 1))
    chunks = list(read_table(str(path), size, chunk_bytes=size // 8))
    assert len(whole) == 1
    assert 6 <= len(chunks) <= 12
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), whole[0])
    np.testing.assert_allclose(whole[0]["a"], frame["a"], rtol=1e-10)


def test_kinds():
    assert kind("x/y.CSV") == "table" and kind("p.jpeg") == "image"
    with pytest.raises(UnsupportedFile, match=r"unsupported file type '\.docx'"):
        kind("report.docx")


def test_images_become_arrays(tmp_path: Path):
    from PIL import Image

    Image.new("RGB", (5, 2), (1, 2, 3)).save(tmp_path / "i.png")
    arr = read_image(str(tmp_path / "i.png"))
    assert arr.shape == (2, 5, 3) and arr[1, 4].tolist() == [1, 2, 3]
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(ValueError, match="not a readable image"):
        read_image(str(tmp_path / "bad.png"))
