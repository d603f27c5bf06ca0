"""The merge: once every mini-batch is committed, write the output file, errors.jsonl and summary.json.

Parts are concatenated as bytes in mini-batch order under one header, so the
output is identical whatever the number of instances or workers. summary.json is
written last: its presence marks a finished job. Before it, the files each
committed mini-batch staged (partitioned rows, a script's own files) are moved into
place. The rows' part files and the attempt folders are removed after it;
manifests, the plan and the status objects stay as the record.
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
import time
from typing import IO

from mlendpoints_serving.batch.failures import JobFailed, threshold_exceeded
from mlendpoints_serving.batch.parts import (
    STAGING_PREFIX,
    Manifest,
    committed,
    data_path,
    read_manifests,
    staged_path,
)
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


def _write_rows(out: Location, settings: BatchSettings, manifests: list[Manifest]) -> None:
    with_rows = [m for m in manifests if m.rows]
    columns = with_rows[0].columns if with_rows else []
    for m in with_rows:
        if m.columns != columns:
            raise JobFailed(
                BatchFailure.OutputColumnsDiffer,
                f"mini-batch {m.index} has output columns {m.columns}, "
                f"mini-batch {with_rows[0].index} has {columns}",
            )
    fmt = settings.output_format
    with out.atomic_write(settings.rows_name) as dst:
        if fmt == "parquet":
            _merge_parquet(out, with_rows, dst)
            return
        if columns and fmt == "csv" and settings.output_header:
            dst.write(_header(columns))
        for m in with_rows:
            with out.fs.open(out.join(data_path(m.index, fmt)), "rb") as src:
                shutil.copyfileobj(src, dst, 8 << 20)


def _header(columns: list[str]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(columns)
    return buf.getvalue().encode()


def _merge_parquet(out: Location, manifests: list[Manifest], dst: IO[bytes]) -> None:
    """The parts' row groups into one file, a row group at a time (bounded memory), typed as the first."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer: pq.ParquetWriter | None = None
    for m in manifests:
        with out.fs.open(out.join(data_path(m.index, "parquet")), "rb") as src:
            part = pq.ParquetFile(src)
            for group in range(part.num_row_groups):
                table = part.read_row_group(group)
                if writer is None:
                    writer = pq.ParquetWriter(dst, table.schema)
                elif table.schema != writer.schema:
                    try:
                        table = table.cast(writer.schema)
                    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
                        raise JobFailed(
                            BatchFailure.OutputColumnsDiffer,
                            f"mini-batch {m.index} has output types {table.schema}, the first has "
                            f"{writer.schema}",
                        ) from exc
                writer.write_table(table)
    if writer is not None:
        writer.close()


def _publish(out: Location, manifests: list[Manifest]) -> int:
    """Move each committed mini-batch's own files into place, in mini-batch order. Idempotent: a file
    already moved by a merge that was killed is skipped (its staged copy is gone)."""
    moved = 0
    for m in manifests:
        if m.staging is None:
            continue
        for rel in m.outputs:
            src = staged_path(m.staging, rel)
            if out.exists(src):
                out.move(src, rel)
            moved += 1
    return moved


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
    if failure is None:
        files = _publish(out, manifests)
        if settings.output_action == "appendRow":
            if not settings.partition_outputs:
                _write_rows(out, settings, manifests)
            summary.rows = sum(m.rows for m in manifests)
            summary.output = out.full_uri(out.join(settings.rows_name))
        if files:
            log.info(f"{files} files of the mini-batches moved into {out.uri}")
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
    names = out.list_names(BATCH_PARTS_DIR)
    leftovers = [f"{BATCH_PARTS_DIR}/{n}" for n in names if n.startswith(".tmp-")]
    out.remove([data_path(i, settings.output_format) for i in indices] + leftovers)
    # Attempt folders: the committed ones are empty now, the others belong to attempts never committed.
    for name in names:
        if name.startswith(STAGING_PREFIX):
            out.remove_tree(f"{BATCH_PARTS_DIR}/{name}")
    return summary
