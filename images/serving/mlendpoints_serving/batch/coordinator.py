"""One instance's scoring phase: hand its mini-batches to worker processes; retry, time out, count.

The coordinator only plans and dispatches (no model, no pandas): workers score
and commit. A mini-batch that raises, outlives the retry timeout (its worker is
killed) or whose worker dies is retried up to `max_retries` times, then all its
items are recorded as failed. Before counting a failure the coordinator checks
whether the part was committed after all (a worker killed right after its
commit), so a success is never turned into a failure.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from mlendpoints_serving.batch.failures import JobFailed, threshold_exceeded
from mlendpoints_serving.batch.forkserver import worker_context
from mlendpoints_serving.batch.messages import Done, Failed, InitFailed, Ready, Task, WorkerMessage
from mlendpoints_serving.batch.parts import ItemError, Manifest, commit_manifest, committed, read_manifests
from mlendpoints_serving.batch.plan import MiniBatch
from mlendpoints_serving.batch.progress import Progress
from mlendpoints_serving.batch.report import ProgressReporter
from mlendpoints_serving.batch.settings import BatchSettings
from mlendpoints_serving.batch.storage import Location
from mlendpoints_serving.contract import BatchCounts, BatchFailure, BatchStatus, batch_status_path

log = logging.getLogger("mlendpoints.batch")
STATUS_INTERVAL_S = 1.0


def _worker_process(conn: Connection, settings: BatchSettings) -> None:
    # Imported here, in the worker process: the coordinator never loads pandas, pyarrow or MLflow.
    from mlendpoints_serving.batch.worker import worker_main

    worker_main(conn, settings)


@dataclass
class _Worker:
    proc: BaseProcess
    conn: Connection
    ready: bool = False
    batch: MiniBatch | None = None
    deadline: float = float("inf")


@dataclass
class Coordinator:
    settings: BatchSettings
    out: Location
    instance: int
    batches: list[MiniBatch]  # this instance's share
    started_at: float
    status: BatchStatus = field(init=False)
    _workers: list[_Worker] = field(default_factory=list)
    _pending: collections.deque[MiniBatch] = field(default_factory=collections.deque)
    _failures: collections.Counter[int] = field(default_factory=collections.Counter)
    _start_failures: int = 0
    _status_written: float = 0.0

    def __post_init__(self) -> None:
        self.status = BatchStatus(
            phase="Running",
            instance=self.instance,
            startedAt=self.started_at,
            miniBatches=BatchCounts(total=len(self.batches)),
            items=BatchCounts(total=sum(len(b.files) for b in self.batches)),
        )
        # Workers fork from a server process that imported the heavy modules once: a worker starts
        # in milliseconds.
        self._ctx = worker_context(self.settings.model_dir, self.settings.scoring_script)
        self._reporter = (
            ProgressReporter(self.settings.progress_configmap, self.instance, self.settings.progress_interval)
            if self.settings.progress_configmap
            else None
        )

    # -- public -----------------------------------------------------------------------------------
    def run(self) -> BatchStatus:
        done = committed(self.out)
        for manifest in read_manifests(self.out, [b.index for b in self.batches if b.index in done]):
            self._count(manifest)
        self._pending.extend(b for b in self.batches if b.index not in done)
        log.info(
            f"instance {self.instance}: {len(self._pending)} of {len(self.batches)} mini-batches to score",
            extra={
                "fields": {
                    "instance": self.instance,
                    "todo": len(self._pending),
                    "share": len(self.batches),
                    "committed": len(self.batches) - len(self._pending),
                }
            },
        )
        self._write_status(force=True)
        try:
            self._check_threshold()
            with Progress(
                len(self.batches), len(self.batches) - len(self._pending), f"instance {self.instance}"
            ) as self._progress:
                for _ in range(min(self.settings.max_concurrency, len(self._pending))):
                    self._spawn()
                self._loop()
        except JobFailed as exc:
            self.status.phase, self.status.reason, self.status.message = "Failed", exc.reason, exc.message
            self._write_status(force=True)
            raise
        finally:
            self._stop_workers()
        self.status.phase = "Succeeded"
        self._write_status(force=True)
        return self.status

    # -- the loop ---------------------------------------------------------------------------------
    def _loop(self) -> None:
        while self._pending or any(w.batch for w in self._workers):
            self._dispatch()
            deadline = min((w.deadline for w in self._workers), default=float("inf"))
            report = self._reporter.due_in() if self._reporter else None
            if report is not None:  # a held-back progress report is due then
                deadline = min(deadline, time.monotonic() + report)
            timeout = None if deadline == float("inf") else max(0.0, deadline - time.monotonic())
            handles: list[Any] = [w.conn for w in self._workers] + [w.proc.sentinel for w in self._workers]
            ready = set(wait(handles, timeout=timeout))
            for w in list(self._workers):
                if w.conn in ready:
                    self._receive(w)
                elif w.proc.sentinel in ready:
                    self._lost(w, f"worker process died (exit code {w.proc.exitcode})")
            if self._reporter:
                self._reporter.flush()
            now = time.monotonic()
            for w in [w for w in self._workers if w.batch and w.deadline <= now]:
                w.proc.kill()
                self._lost(w, f"timed out after {self.settings.retry_timeout:g}s")

    def _dispatch(self) -> None:
        for w in self._workers:
            if w.ready and w.batch is None and self._pending:
                batch = self._pending.popleft()
                w.conn.send(Task(batch, self._failures[batch.index] + 1))
                w.batch, w.deadline = batch, time.monotonic() + self.settings.retry_timeout

    def _receive(self, w: _Worker) -> None:
        try:
            message: WorkerMessage = w.conn.recv()
        except (EOFError, OSError):
            w.proc.join(5)
            self._lost(w, f"worker process died (exit code {w.proc.exitcode})")
            return
        match message:
            case Ready():
                w.ready, self._start_failures = True, 0
            case InitFailed(error):
                raise JobFailed(
                    BatchFailure.WorkerInitFailed, f"a worker could not load the model or run init(): {error}"
                )
            case Done() | Failed():
                batch = w.batch
                assert batch is not None
                w.batch, w.deadline = None, float("inf")
                if isinstance(message, Done):
                    self._record(message.manifest)
                else:
                    self._attempt_failed(batch, message.error)

    def _lost(self, w: _Worker, reason: str) -> None:
        """A worker died or was killed: replace it; its mini-batch, if any, failed this attempt."""
        w.proc.join(5)
        w.conn.close()
        self._workers.remove(w)
        if w.batch is not None:
            self._attempt_failed(w.batch, reason)
        elif not w.ready:
            self._start_failures += 1
            if self._start_failures > self.settings.max_retries:
                raise JobFailed(BatchFailure.WorkerInitFailed, f"workers keep dying while starting: {reason}")
        if self._pending and len(self._workers) < self.settings.max_concurrency:
            self._spawn()

    def _attempt_failed(self, batch: MiniBatch, error: str) -> None:
        if batch.index in committed(self.out):  # committed just before its worker died
            self._record(read_manifests(self.out, [batch.index])[0])
            return
        self._failures[batch.index] += 1
        attempts = self._failures[batch.index]
        fields = {"mini_batch": batch.index, "attempt": attempts, "error": error}
        if attempts <= self.settings.max_retries:
            log.warning(
                f"mini-batch {batch.index} failed (attempt {attempts}), retrying: {error}",
                extra={"fields": fields},
            )
            self._pending.appendleft(batch)
            return
        log.error(
            f"mini-batch {batch.index} failed after {attempts} attempts: {error}", extra={"fields": fields}
        )
        manifest = Manifest(
            index=batch.index,
            items=len(batch.files),
            succeeded=0,
            failed=len(batch.files),
            mini_batch_failed=True,
            attempts=attempts,
            errors=[
                ItemError(
                    file_name=f.name,
                    mini_batch=batch.index,
                    error=f"mini-batch failed after {attempts} attempts: {error}",
                )
                for f in batch.files
            ],
        )
        commit_manifest(self.out, manifest)
        self._record(manifest)

    # -- bookkeeping ------------------------------------------------------------------------------
    def _count(self, m: Manifest) -> None:
        counts = self.status.miniBatches
        if m.mini_batch_failed:
            counts.failed += 1
        else:
            counts.succeeded += 1
        self.status.items.succeeded += m.succeeded
        self.status.items.failed += m.failed
        self.status.rows += m.rows

    def _record(self, m: Manifest) -> None:
        self._count(m)
        self._progress.advance(
            {
                "mini_batch": m.index,
                "items": m.items,
                "succeeded": m.succeeded,
                "failed": m.failed,
                "rows": m.rows,
                "attempts": m.attempts,
                "seconds": m.seconds,
            }
        )
        self._write_status()
        self._check_threshold()

    def _check_threshold(self) -> None:
        failure = threshold_exceeded(self.status.items.failed, self.settings.error_threshold)
        if failure:
            raise failure

    def _write_status(self, force: bool = False) -> None:
        now = time.time()
        self.status.updatedAt = now
        self.status.seconds = round(now - self.started_at, 3)
        if self._reporter:  # throttled by its own interval
            self._reporter.update(self.status, force=force)
        if not force and now - self._status_written < STATUS_INTERVAL_S:
            return
        self.out.write_bytes(batch_status_path(self.instance), self.status.model_dump_json().encode())
        self._status_written = now

    # -- worker processes -------------------------------------------------------------------------
    def _spawn(self) -> None:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=_worker_process, args=(child, self.settings), daemon=True, name="mlendpoints-batch-worker"
        )
        proc.start()
        child.close()
        self._workers.append(_Worker(proc=proc, conn=parent))

    def _stop_workers(self) -> None:
        for w in self._workers:
            w.conn.close()  # an idle worker sees EOF and exits
        for w in self._workers:
            w.proc.join(2)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join()
        self._workers.clear()
