"""Committed mini-batch parts under `<output>/_parts/`.

A mini-batch commits its rows (`part-NNNNNN.csv`, headerless CSV) and then its
manifest (`part-NNNNNN.json`: counts, columns, errors). The manifest is the
commit point: a part without one is ignored and rewritten by the retry.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

from mlendpoints_serving.batch.storage import Location
from mlendpoints_serving.contract import BATCH_PARTS_DIR

_MANIFEST = re.compile(r"^part-(\d{6,})\.json$")


def data_path(index: int) -> str:
    return f"{BATCH_PARTS_DIR}/part-{index:06d}.csv"


def manifest_path(index: int) -> str:
    return f"{BATCH_PARTS_DIR}/part-{index:06d}.json"


class ItemError(BaseModel):
    """One line of errors.jsonl."""

    file_name: str | None = Field(description="None when a scoring script returned fewer results than files.")
    mini_batch: int
    error: str


class Manifest(BaseModel):
    index: int
    items: int
    succeeded: int
    failed: int
    rows: int = 0
    columns: list[str] = Field(default_factory=list, description="Columns of the data file; [] when none.")
    mini_batch_failed: bool = Field(default=False, description="Retries exhausted: every item failed.")
    attempts: int = 1
    seconds: float = 0.0
    errors: list[ItemError] = Field(default_factory=list)


def committed(out: Location) -> set[int]:
    found = (_MANIFEST.match(name) for name in out.list_names(BATCH_PARTS_DIR))
    return {int(m.group(1)) for m in found if m}


def commit_manifest(out: Location, manifest: Manifest) -> None:
    out.write_bytes(manifest_path(manifest.index), manifest.model_dump_json().encode())


def read_manifests(out: Location, indices: list[int]) -> list[Manifest]:
    raw = out.read_many([manifest_path(i) for i in indices])
    return [Manifest.model_validate_json(raw[manifest_path(i)]) for i in indices]
