"""Committed mini-batch parts under `<output>/_parts/`.

A mini-batch commits its rows (`part-NNNNNN.csv` headerless CSV, `.jsonl` or
`.parquet`, by the output format) and any files of its own (partitioned rows, the
files a scoring script wrote) under a folder of this attempt, `out-NNNNNN-<id>/`,
and then its manifest (`part-NNNNNN.json`: counts, columns, errors, that folder and
its files). The manifest is the commit point: a part or attempt folder that no
manifest names is ignored, rewritten by the retry and removed by the merge, which
moves the committed files into place.
"""

from __future__ import annotations

import re
import uuid

from pydantic import BaseModel, Field

from mlendpoints_serving.batch.storage import Location
from mlendpoints_serving.contract import BATCH_PARTS_DIR

STAGING_PREFIX = "out-"
_MANIFEST = re.compile(r"^part-(\d{6,})\.json$")


def data_path(index: int, output_format: str = "csv") -> str:
    return f"{BATCH_PARTS_DIR}/part-{index:06d}.{output_format}"


def new_staging(index: int) -> str:
    """A folder of its own for one attempt of a mini-batch: a retry never sees a killed attempt's files."""
    return f"{STAGING_PREFIX}{index:06d}-{uuid.uuid4().hex[:12]}"


def staged_path(staging: str, rel: str) -> str:
    return f"{BATCH_PARTS_DIR}/{staging}/{rel}"


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
    staging: str | None = Field(
        default=None, description="The attempt's folder under _parts/ holding `outputs`; None when none."
    )
    outputs: list[str] = Field(
        default_factory=list, description="Files of this mini-batch, relative to the output folder."
    )


def committed(out: Location) -> set[int]:
    found = (_MANIFEST.match(name) for name in out.list_names(BATCH_PARTS_DIR))
    return {int(m.group(1)) for m in found if m}


def commit_manifest(out: Location, manifest: Manifest) -> None:
    out.write_bytes(manifest_path(manifest.index), manifest.model_dump_json().encode())


def read_manifests(out: Location, indices: list[int]) -> list[Manifest]:
    raw = out.read_many([manifest_path(i) for i in indices])
    return [Manifest.model_validate_json(raw[manifest_path(i)]) for i in indices]
