"""The job plan: input files in sorted order, cut into numbered mini-batches.

Mini-batch `i` belongs to instance `i % instance_count`. Parts are named by
mini-batch number and merged in that order, so the output does not depend on
how many instances (or workers) scored them. The plan's fingerprint (inputs,
settings that shape the output, model, scoring script) is stored with the parts,
so a resumed run refuses parts written by a different job.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from mlendpoints_serving.batch.settings import BatchSettings
from mlendpoints_serving.batch.storage import InputFile
from mlendpoints_serving.contract import BATCH_PARTS_DIR

PLAN_FILE = f"{BATCH_PARTS_DIR}/plan.json"


@dataclass(frozen=True)
class MiniBatch:
    index: int
    files: tuple[InputFile, ...]


class Plan(BaseModel):
    fingerprint: str
    mini_batches: int
    items: int
    created: float


def mini_batches(files: list[InputFile], size: int) -> list[MiniBatch]:
    return [MiniBatch(i // size, tuple(files[i : i + size])) for i in range(0, len(files), size)]


def share(batches: list[MiniBatch], instance_index: int, instance_count: int) -> list[MiniBatch]:
    return [b for b in batches if b.index % instance_count == instance_index]


def fingerprint(files: list[InputFile], settings: BatchSettings) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.name}\0{f.size}\n".encode())
    shape: tuple[object, ...] = (settings.mini_batch_size, settings.output_action, settings.output_file_name)
    if settings.output_format != "csv" or settings.partition_outputs:  # a csv job's fingerprint is as before
        shape += (settings.output_format, settings.partition_outputs)
    if not settings.output_header:  # only then, so a job's fingerprint is as before
        shape += ("no-header",)
    h.update(repr(shape).encode())
    mlmodel = Path(settings.model_dir) / "MLmodel"
    if mlmodel.is_file():
        h.update(mlmodel.read_bytes())
    if settings.scoring_script:
        h.update(Path(settings.scoring_script).read_bytes())
    return h.hexdigest()


def new_plan(files: list[InputFile], settings: BatchSettings) -> Plan:
    batches = -(-len(files) // settings.mini_batch_size)
    return Plan(
        fingerprint=fingerprint(files, settings), mini_batches=batches, items=len(files), created=time.time()
    )
