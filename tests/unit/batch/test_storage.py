"""Listing and atomic commits on the local filesystem."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlendpoints_serving.batch.storage import Location, list_inputs


def test_folders_are_walked_and_listed_in_sorted_order(tmp_path: Path):
    for rel in ["b.csv", "a/z.csv", "a/b/c.png", "A.csv", "a.csv"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x" * len(rel))
    files = list_inputs(str(tmp_path), "uriFolder")
    assert [f.name for f in files] == ["A.csv", "a.csv", "a/b/c.png", "a/z.csv", "b.csv"]
    assert [f.size for f in files] == [5, 5, 9, 7, 5]
    assert files[2].uri == str(tmp_path / "a" / "b" / "c.png")


def test_a_file_input_and_missing_inputs(tmp_path: Path):
    (tmp_path / "one.csv").write_text("a\n1\n")
    [only] = list_inputs(str(tmp_path / "one.csv"), "uriFile")
    assert only.name == "one.csv" and only.size == 4
    with pytest.raises(FileNotFoundError, match="not a folder"):
        list_inputs(str(tmp_path / "one.csv"), "uriFolder")
    with pytest.raises(FileNotFoundError):
        list_inputs(str(tmp_path / "missing"), "uriFolder")


def test_an_interrupted_atomic_write_leaves_nothing(tmp_path: Path):
    loc = Location(str(tmp_path / "out"))
    loc.write_bytes("_parts/x.json", b"committed")
    with pytest.raises(RuntimeError), loc.atomic_write("_parts/x.json") as fh:
        fh.write(b"half")
        raise RuntimeError("killed")
    assert (tmp_path / "out" / "_parts" / "x.json").read_bytes() == b"committed"
    assert sorted(loc.list_names("_parts")) == ["x.json"]
    assert loc.list_names("missing") == []
