"""A batch job end to end for one invocation: check the output, plan, score this instance's share, merge."""

from __future__ import annotations

import logging
import os

from mlendpoints_serving.batch.coordinator import Coordinator
from mlendpoints_serving.batch.failures import JobFailed
from mlendpoints_serving.batch.merge import merge, read_plan, read_summary
from mlendpoints_serving.batch.plan import PLAN_FILE, Plan, mini_batches, new_plan, share
from mlendpoints_serving.batch.settings import BatchSettings
from mlendpoints_serving.batch.storage import InputFile, Location, list_inputs
from mlendpoints_serving.contract import (
    BATCH_SUMMARY_FILE,
    ENV_JOB_COMPLETION_INDEX,
    BatchFailure,
    BatchStatus,
    batch_partition_name,
)

log = logging.getLogger("mlendpoints.batch")


def instance_index(settings: BatchSettings) -> int:
    if settings.instance_index is not None:
        return settings.instance_index
    index = int(os.environ.get(ENV_JOB_COMPLETION_INDEX, "0"))
    if index >= settings.instance_count:
        raise JobFailed(
            BatchFailure.InvalidSettings,
            f"${ENV_JOB_COMPLETION_INDEX}={index} is not below instance-count {settings.instance_count}",
        )
    return index


def _finished(summary: BatchStatus) -> BatchStatus:
    """The job already ran to its end into this output: report that outcome again, change nothing."""
    log.info(f"{BATCH_SUMMARY_FILE} exists: the job already finished ({summary.phase}); nothing to do")
    if summary.phase == "Failed":
        raise JobFailed(_recorded_reason(summary.reason), summary.message or "the job failed")
    return summary


def _recorded_reason(reason: str | None) -> BatchFailure:
    """The failure a finished job's summary records: none, or one this version does not know, is
    reported as plain `Failed`."""
    known = {failure.value: failure for failure in BatchFailure}
    return known.get(reason or "", BatchFailure.Failed)


def _claim_output(out: Location, plan: Plan, settings: BatchSettings) -> Plan | BatchStatus:
    """The stored plan to resume (or this new one), or the summary of this very job already finished.

    An output that holds anything of another job (another input, model or settings) is never touched.
    """
    stored = read_plan(out)
    if stored is not None and stored.fingerprint != plan.fingerprint:
        raise JobFailed(
            BatchFailure.OutputExists,
            f"{out.uri} holds parts or results of a different job (inputs, model or "
            "settings differ); choose a new output",
        )
    summary = read_summary(out)
    if stored is None:
        clash = [n for n in (BATCH_SUMMARY_FILE, settings.rows_name) if out.exists(n)]
        if clash:
            raise JobFailed(
                BatchFailure.OutputExists, f"{out.uri} already holds {', '.join(clash)}; choose a new output"
            )
        out.write_bytes(PLAN_FILE, plan.model_dump_json().encode())
        return plan
    return summary if summary is not None else stored


def _check_partition_names(files: list[InputFile], settings: BatchSettings) -> None:
    """Two inputs whose partitioned outputs would have one name (`a.csv`, `a.parquet`) are refused."""
    seen: dict[str, str] = {}
    for f in files:
        name = batch_partition_name(f.name, settings.output_format)
        if name in seen:
            raise JobFailed(
                BatchFailure.InvalidSettings,
                f"partitionOutputs: inputs {seen[name]!r} and {f.name!r} would both write {name!r}",
            )
        seen[name] = f.name


def run(settings: BatchSettings) -> BatchStatus:
    out = Location(settings.output)
    if settings.phase == "merge":
        summary = read_summary(out)
        return _finished(summary) if summary is not None else merge(out, settings)
    files = list_inputs(settings.input, settings.input_type)
    if settings.partition_outputs:
        _check_partition_names(files, settings)
    claimed = _claim_output(out, new_plan(files, settings), settings)
    if isinstance(claimed, BatchStatus):
        return _finished(claimed)
    index = instance_index(settings)
    batches = share(mini_batches(files, settings.mini_batch_size), index, settings.instance_count)
    coordinator = Coordinator(
        settings=settings, out=out, instance=index, batches=batches, started_at=claimed.created
    )
    try:
        status = coordinator.run()
    except JobFailed as exc:
        if settings.phase == "all":
            merge(out, settings, failure=exc)  # records the summary and errors so far, then raises
        raise
    return merge(out, settings) if settings.phase == "all" else status
