"""The BatchJob's next step and status, from its live Jobs and pods (the driver's termination messages)."""

from __future__ import annotations

from typing import Any

from mlendpoints.operator.batch import next_step, progress_reports, progress_text, reports, sum_instances
from mlendpoints_serving.contract import BatchCounts, BatchStatus


def _job(phase: str, outcome: str | None = None) -> dict[str, Any]:
    conditions = [{"type": outcome, "status": "True"}] if outcome else []
    return {
        "metadata": {"labels": {"mlendpoints.io/batch-phase": phase}},
        "status": {"conditions": conditions},
    }


def _pod(phase: str, state: str, exit_code: int = 0, message: str = "") -> dict[str, Any]:
    terminated = {"exitCode": exit_code, "message": message} if state in ("Succeeded", "Failed") else None
    return {
        "metadata": {"labels": {"mlendpoints.io/batch-phase": phase}},
        "status": {
            "phase": state,
            "containerStatuses": [
                {"name": "batch", "state": {"terminated": terminated} if terminated else {"running": {}}}
            ],
        },
    }


def _report(instance: int | None, items: int, failed: int = 0) -> str:
    return BatchStatus(
        phase="Succeeded",
        instance=instance,
        updatedAt=1.0,
        miniBatches=BatchCounts(total=2, succeeded=2),
        items=BatchCounts(total=items, succeeded=items - failed, failed=failed),
    ).model_dump_json()


def test_running_then_merging_then_succeeded():
    scoring = [_job("score"), _job("score")]
    assert next_step(2, scoring, None, [_pod("score", "Pending")]).phase == "Pending"
    assert next_step(2, scoring, None, [_pod("score", "Running")]).phase == "Running"

    done = [_job("score", "Complete"), _job("score", "Complete")]
    pods = [
        _pod("score", "Succeeded", message=_report(0, 5)),
        _pod("score", "Succeeded", message=_report(1, 4, 1)),
    ]
    step = next_step(2, done, None, pods)
    assert (step.phase, step.merge, step.stop_scoring) == ("Running", True, False)
    mini_batches, items = sum_instances(reports(pods))
    assert (items.total, items.succeeded, items.failed, mini_batches.total) == (9, 8, 1, 4)

    merged = [*pods, _pod("merge", "Succeeded", message=_report(None, 9, 1))]
    step = next_step(2, done, _job("merge", "Complete"), merged)
    assert step.phase == "Succeeded" and step.summary is not None and step.summary.items.failed == 1


def test_a_final_failure_stops_the_job_at_once():
    pods = [
        _pod("score", "Running"),
        _pod("score", "Failed", 1, "mlendpoints-batch failed: OutputExists: /out already holds summary.json"),
    ]
    step = next_step(2, [_job("score"), _job("score")], None, pods)
    assert (step.phase, step.stop_scoring, step.merge) == ("Failed", True, False)
    assert step.message == "OutputExists: /out already holds summary.json"


def test_a_retriable_failure_waits_for_the_backoff_limit():
    pods = [_pod("score", "Failed", 137, "mlendpoints-batch failed: something odd"), _pod("score", "Running")]
    assert next_step(1, [_job("score")], None, pods).phase == "Running"
    step = next_step(1, [_job("score", "Failed")], None, pods)
    assert step.phase == "Failed" and step.stop_scoring


def test_over_the_error_threshold_the_merge_records_the_failure():
    message = (
        "mlendpoints-batch failed: ErrorThresholdExceeded: 3 items failed, more than the error threshold 2"
    )
    pods = [_pod("score", "Failed", 1, message), _pod("score", "Running")]
    step = next_step(2, [_job("score"), _job("score")], None, pods)
    assert (step.phase, step.merge, step.stop_scoring) == ("Running", True, True)
    merge_pods = [*pods, _pod("merge", "Failed", 1, message)]
    step = next_step(2, [_job("score"), _job("score")], _job("merge"), merge_pods)
    assert step.phase == "Failed" and step.message is not None and step.message.startswith("ErrorThreshold")


def test_running_instances_progress_reports_count_before_they_finish():
    def running(instance: int, done: int, updated: float) -> str:
        return BatchStatus(
            phase="Running", instance=instance, updatedAt=updated,
            miniBatches=BatchCounts(total=5, succeeded=done),
            items=BatchCounts(total=50, succeeded=10 * done),
        ).model_dump_json()  # fmt: skip

    configmap = {"data": {"instance-0": running(0, 2, 10.0), "instance-1": running(1, 1, 10.0), "other": "x"}}
    mini_batches, items = sum_instances(progress_reports(configmap))
    assert (mini_batches.total, mini_batches.succeeded, items.succeeded) == (10, 3, 30)
    assert progress_text(mini_batches) == "3/10 (30%)"
    # instance 0 finished: its termination message is newer than its last progress report
    finished = _pod("score", "Succeeded", message=_report(0, 50))
    mini_batches, _ = sum_instances([*progress_reports(configmap), *reports([finished])])
    assert progress_text(mini_batches) == "3/7 (42%)", "instance 0's final report (2 of 2) replaces 2 of 5"
    assert progress_text(sum_instances(progress_reports(None))[0]) is None
