"""The merge: once every mini-batch is committed, write the output file, errors.jsonl and summary.json.

Parts are concatenated as bytes in mini-batch order under one header, so the
output is identical whatever the number of instances or workers. summary.json is
written last: its presence marks a finished job. The rows' part files are
removed after it; manifests, the plan and the status objects stay as the record.
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
import time

from mlendpoints_serving.batch.failures import JobFailed, threshold_exceeded
from mlendpoints_serving.batch.parts import Manifest, committed, data_path, read_manifests
from mlendpoints_serving.batch.plan import PLAN_FILE, Plan
from mlendpoints_serving.batch.settings import BatchSettings
from mlendpoints_serving.batch.storage import Location
from mlendpoints_serving.contract import (
    BATCH_ERRORS_FILE,
    BATCH_PARTS_DIR,
    BATCH_SUMMARY_FILE,
    BatchCounts,
    BatchFailure,
    BatchStatus,
)

log = logging.getLogger("mlendpoints.batch")


def read_plan(out: Location) -> Plan | None:
    try:
        return Plan.model_validate_json(out.read_bytes(PLAN_FILE))
    except FileNotFoundError:
        return None


def read_summary(out: Location) -> BatchStatus | None:
    try:
        return BatchStatus.model_validate_json(out.read_bytes(BATCH_SUMMARY_FILE))
    except FileNotFoundError:
        return None


def _header(columns: list[str]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(columns)
    return buf.getvalue().encode()


def _write_rows(out: Location, name: str, manifests: list[Manifest]) -> None:
    with_rows = [m for m in manifests if m.rows]
    columns = with_rows[0].columns if with_rows else []
    for m in with_rows:
        if m.columns != columns:
            raise JobFailed(
                BatchFailure.OutputColumnsDiffer,
                f"mini-batch {m.index} has output columns {m.columns}, "
                f"mini-batch {with_rows[0].index} has {columns}",
            )
    with out.atomic_write(name) as dst:
        if columns:
            dst.write(_header(columns))
        for m in with_rows:
            with out.fs.open(out.join(data_path(m.index)), "rb") as src:
                shutil.copyfileobj(src, dst, 8 << 20)


def merge(out: Location, settings: BatchSettings, failure: JobFailed | None = None) -> BatchStatus:
    """Finish the job from its committed parts; with `failure`, record it (no output file) and raise it."""
    plan = read_plan(out)
    if plan is None:
        raise JobFailed(
            BatchFailure.NothingToMerge,
            f"{out.uri} holds no job plan ({PLAN_FILE}); run the score phase first",
        )
    indices = sorted(i for i in committed(out) if i < plan.mini_batches)
    manifests = read_manifests(out, indices)
    failed_items = sum(m.failed for m in manifests)
    failure = failure or threshold_exceeded(failed_items, settings.error_threshold)
    if failure is None and len(indices) < plan.mini_batches:
        missing = sorted(set(range(plan.mini_batches)) - set(indices))
        raise JobFailed(
            BatchFailure.PartsMissing,
            f"{len(missing)} of {plan.mini_batches} mini-batches are not committed "
            f"yet (first: {missing[:5]}); score every instance's share, then merge",
        )
    now = time.time()
    summary = BatchStatus(
        phase="Failed" if failure else "Succeeded",
        reason=failure.reason if failure else None,
        message=failure.message if failure else None,
        miniBatches=BatchCounts(
            total=plan.mini_batches,
            succeeded=sum(not m.mini_batch_failed for m in manifests),
            failed=sum(m.mini_batch_failed for m in manifests),
        ),
        items=BatchCounts(
            total=plan.items, succeeded=sum(m.succeeded for m in manifests), failed=failed_items
        ),
        startedAt=plan.created,
        updatedAt=now,
        seconds=round(now - plan.created, 3),
    )
    if failure is None and settings.output_action == "appendRow":
        _write_rows(out, settings.output_file_name, manifests)
        summary.rows = sum(m.rows for m in manifests)
        summary.output = out.full_uri(out.join(settings.output_file_name))
    errors = b"".join(e.model_dump_json().encode() + b"\n" for m in manifests for e in m.errors)
    out.write_bytes(BATCH_ERRORS_FILE, errors)
    out.write_bytes(BATCH_SUMMARY_FILE, summary.model_dump_json(indent=2).encode())
    log.info(
        f"job {summary.phase.lower()}: {summary.items.succeeded} of {summary.items.total} items scored, "
        f"{summary.items.failed} failed, {summary.rows} rows",
        extra={"fields": summary.model_dump(exclude_none=True)},
    )
    if failure:
        raise failure
    # Leftovers of writers killed mid-write go too: with every part committed, none is still in use.
    leftovers = [f"{BATCH_PARTS_DIR}/{n}" for n in out.list_names(BATCH_PARTS_DIR) if n.startswith(".tmp-")]
    out.remove([data_path(i) for i in indices] + leftovers)
    return summary
