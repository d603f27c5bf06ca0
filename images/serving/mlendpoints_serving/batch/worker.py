"""A worker process: loads the model (or runs the script's init()) once, then scores mini-batches.

Each mini-batch's rows are committed as one part, then its manifest. A file that
cannot be scored (unsupported type, bad data, input the model rejects) is an
item error recorded in the manifest; anything else raises, and the coordinator
retries the whole mini-batch.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import posixpath
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import IO, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from mlendpoints_serving.batch import readers
from mlendpoints_serving.batch.formats import FileRows, RowsSink
from mlendpoints_serving.batch.messages import Done, Failed, InitFailed, Ready, Task
from mlendpoints_serving.batch.parts import (
    ItemError,
    Manifest,
    commit_manifest,
    data_path,
    new_staging,
    staged_path,
)
from mlendpoints_serving.batch.plan import PLAN_FILE, MiniBatch
from mlendpoints_serving.batch.scoring import ModelScorer, ScriptScorer
from mlendpoints_serving.batch.settings import BatchSettings
from mlendpoints_serving.batch.storage import InputFile, Location
from mlendpoints_serving.contract import (
    BATCH_ERRORS_FILE,
    BATCH_PARTS_DIR,
    BATCH_SUMMARY_FILE,
    ENV_BATCH_OUTPUT_DIR,
    batch_partition_name,
)
from mlendpoints_serving.model import ModelError
from mlendpoints_serving.runtime import setup_logging

log = logging.getLogger("mlendpoints.batch.worker")

# Errors of the data or the model on one file: retrying the file would fail the same way.
ITEM_ERRORS = (ValueError, TypeError, KeyError, IndexError, ModelError)
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker when the coordinator dies: no orphan keeps scoring after a restart."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _share_cores(workers: int) -> None:
    """Each worker gets its share of the cores for BLAS and Arrow threads: all of them in every worker
    oversubscribes the machine, and spinning BLAS threads then slow everyone down."""
    from threadpoolctl import threadpool_limits

    threads = max(1, len(os.sched_getaffinity(0)) // workers)
    threadpool_limits(threads)
    pa.set_cpu_count(threads)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _file_rows(scorer: ModelScorer, f: InputFile, chunk_bytes: int) -> Iterator[pd.DataFrame]:
    """Output rows of one file, a chunk at a time: row, prediction column(s), file_name."""
    if readers.kind(f.name) == "image":
        chunks: Iterator[Any] = iter([readers.read_image(f.uri)])
        score: Any = scorer.image
    else:
        chunks, score = readers.read_table(f.uri, f.size, chunk_bytes), scorer.table
    start = 0
    for chunk in chunks:
        out = score(chunk)
        out.insert(0, "row", np.arange(start, start + len(out)))
        out["file_name"] = f.name
        start += len(out)
        yield out


class Staged:
    """Files of one mini-batch attempt (partitioned rows, a script's own files) under its own folder
    in `_parts/`; the manifest names them, and the merge moves them into place."""

    def __init__(self, out: Location, index: int, settings: BatchSettings) -> None:
        self.out, self.settings = out, settings
        self.folder = new_staging(index)
        self.outputs: list[str] = []

    @contextlib.contextmanager
    def open(self, rel: str) -> Iterator[IO[bytes]]:
        with self.out.atomic_write(staged_path(self.folder, rel)) as fh:
            yield fh
        self.outputs.append(rel)

    def check_name(self, rel: str) -> None:
        """A script's file may not take a name the job writes itself."""
        rows = self.settings.rows_name
        reserved = (BATCH_SUMMARY_FILE, BATCH_ERRORS_FILE, rows, PLAN_FILE)
        if rel in reserved or rel.startswith((f"{BATCH_PARTS_DIR}/", f"{rows}/")):
            raise ValueError(
                f"the scoring script wrote {rel!r} in ${ENV_BATCH_OUTPUT_DIR}: that name is the job's own"
            )


def _score_files(
    scorer: ModelScorer,
    batch: MiniBatch,
    settings: BatchSettings,
    part: RowsSink | None,
    staged: Staged | None,
    manifest: Manifest,
) -> None:
    fmt = settings.output_format
    for f in batch.files:
        # A file's rows reach the part only once the whole file scored: a failure midway adds none.
        with FileRows(fmt, settings.chunk_bytes) as rows:
            try:
                for out in _file_rows(scorer, f, settings.chunk_bytes):
                    columns = [str(c) for c in out.columns]
                    if manifest.columns and columns != manifest.columns:
                        raise ValueError(
                            f"output columns {columns} differ from this mini-batch's {manifest.columns}"
                        )
                    manifest.columns = columns
                    if part is not None or staged is not None:
                        rows.add(out)
                    else:
                        rows.rows += len(out)
            except ITEM_ERRORS as exc:
                manifest.failed += 1
                manifest.errors.append(
                    ItemError(file_name=f.name, mini_batch=batch.index, error=_error_text(exc))
                )
                continue
            if part is not None:
                rows.copy_to(part)
            elif staged is not None:
                rel = posixpath.join(settings.rows_name, batch_partition_name(f.name, fmt))
                with staged.open(rel) as fh, RowsSink(fh, fmt, header=settings.output_header) as sink:
                    rows.copy_to(sink)
            manifest.succeeded += 1
            manifest.rows += rows.rows


def _local_copies(batch: MiniBatch, folder: str) -> list[str]:
    """Local paths of the mini-batch's files, as Azure's contract promises: remote files are downloaded."""
    paths = []
    for i, f in enumerate(batch.files):
        src = Location(f.uri)
        if src.local:
            paths.append(src.path)
            continue
        # A folder per file keeps its own name (a script naming its outputs after its inputs gets the
        # same names as with local inputs) without two files of one name colliding.
        local = f"{folder}/{i:04d}/{posixpath.basename(f.name)}"
        os.makedirs(posixpath.dirname(local), exist_ok=True)
        src.fs.get_file(src.path, local)
        paths.append(local)
    return paths


def _stage_script_files(scorer: ScriptScorer, staged: Staged) -> None:
    """Move what run() wrote in its output folder into the attempt's folder, in sorted order."""
    root = scorer.output_dir
    found = sorted(
        os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/")
        for folder, _, names in os.walk(root)
        for name in names
    )
    for rel in found:
        staged.check_name(rel)
    for rel in found:
        with open(os.path.join(root, rel), "rb") as src, staged.open(rel) as dst:
            shutil.copyfileobj(src, dst, 8 << 20)


def _partition_script_rows(
    frame: pd.DataFrame, batch: MiniBatch, paths: list[str], settings: BatchSettings, staged: Staged
) -> None:
    """partitionOutputs with a script: its rows go to their input's file by their `file_name`."""
    if "file_name" not in frame.columns:
        raise ValueError("partitionOutputs needs run() to return a DataFrame with a file_name column")
    names: dict[str, str] = {}
    for f, p in zip(batch.files, paths, strict=True):
        names.update({p: f.name, posixpath.basename(p): f.name, f.name: f.name})
    owner = frame["file_name"].astype(str).map(names)
    unknown = frame["file_name"][owner.isna()]
    if len(unknown):
        raise ValueError(f"run() returned rows for {unknown.iloc[0]!r}, not a file of this mini-batch")
    fmt = settings.output_format
    for f in batch.files:
        rows = frame[owner == f.name]
        if len(rows):
            rel = posixpath.join(settings.rows_name, batch_partition_name(f.name, fmt))
            with staged.open(rel) as fh, RowsSink(fh, fmt, header=settings.output_header) as sink:
                sink.write_frame(rows.reset_index(drop=True))


def _score_with_script(
    scorer: ScriptScorer,
    batch: MiniBatch,
    settings: BatchSettings,
    part: RowsSink | None,
    staged: Staged,
    manifest: Manifest,
) -> None:
    scorer.clear_output_dir()  # what a failed run() left there is not this attempt's
    try:
        with tempfile.TemporaryDirectory(prefix="mlendpoints-batch-") as folder:
            paths = _local_copies(batch, folder)
            frame = scorer.run(paths)
        _stage_script_files(scorer, staged)
    finally:
        scorer.clear_output_dir()
    items = len(batch.files)
    manifest.rows = len(frame)
    manifest.columns = [str(c) for c in frame.columns]
    if part is not None and len(frame):
        part.write_frame(frame)
    elif settings.partition_outputs and settings.output_action == "appendRow" and len(frame):
        _partition_script_rows(frame, batch, paths, settings, staged)
    if "file_name" in frame.columns:  # results name their files: those with none failed
        returned = {str(v) for v in frame["file_name"]}
        failed: list[str | None] = [
            f.name for f, p in zip(batch.files, paths, strict=True)
            if not returned & {f.name, p, posixpath.basename(p)}
        ]  # fmt: skip
        message = "run() returned no result for this file"
    else:  # one element per success, as Azure's contract: the shortfall failed, files unknown
        failed = [None] * max(0, items - len(frame))
        message = f"run() returned {len(frame)} results for {items} files"
    manifest.failed = len(failed)
    manifest.succeeded = items - manifest.failed
    manifest.errors = [ItemError(file_name=name, mini_batch=batch.index, error=message) for name in failed]


def score_mini_batch(
    scorer: ModelScorer | ScriptScorer, batch: MiniBatch, attempt: int, settings: BatchSettings, out: Location
) -> Manifest:
    """Score one mini-batch and commit it: its part and its own files, then the manifest."""
    started = time.perf_counter()
    manifest = Manifest(index=batch.index, items=len(batch.files), succeeded=0, failed=0, attempts=attempt)
    staged = Staged(out, batch.index, settings)
    fmt = settings.output_format
    with contextlib.ExitStack() as stack:
        part = None
        if settings.output_action == "appendRow" and not settings.partition_outputs:
            stream = stack.enter_context(out.atomic_write(data_path(batch.index, fmt)))
            part = stack.enter_context(RowsSink(stream, fmt, header=False))
        if isinstance(scorer, ScriptScorer):
            _score_with_script(scorer, batch, settings, part, staged, manifest)
        else:
            partitioned = settings.partition_outputs and settings.output_action == "appendRow"
            _score_files(scorer, batch, settings, part, staged if partitioned else None, manifest)
    if staged.outputs:
        manifest.staging, manifest.outputs = staged.folder, staged.outputs
    manifest.seconds = round(time.perf_counter() - started, 4)
    commit_manifest(out, manifest)
    return manifest


def make_scorer(settings: BatchSettings) -> ModelScorer | ScriptScorer:
    if settings.scoring_script:
        return ScriptScorer(
            settings.scoring_script,
            settings.model_dir,
            Location(settings.output).uri,
            settings.azureml_model_dir,
        )
    return ModelScorer(settings.model_dir)


def worker_main(conn: Connection, settings: BatchSettings) -> None:
    """Entry point of a worker process; what it sends and receives is in batch/messages.py."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinator's to handle
    setup_logging(settings.logging_level)
    _share_cores(settings.max_concurrency)
    with contextlib.suppress(EOFError, BrokenPipeError):  # the coordinator is done with us
        try:
            scorer = make_scorer(settings)
        except Exception as exc:
            log.exception("worker init failed")
            conn.send(InitFailed(_error_text(exc)))
            return
        out = Location(settings.output)
        conn.send(Ready())
        while True:
            task: Task = conn.recv()
            batch, attempt = task.batch, task.attempt
            try:
                manifest = score_mini_batch(scorer, batch, attempt, settings, out)
            except Exception as exc:
                fields = {"mini_batch": batch.index, "attempt": attempt}
                log.warning("mini-batch raised", exc_info=True, extra={"fields": fields})
                conn.send(Failed(_error_text(exc)))
                continue
            conn.send(Done(manifest))
