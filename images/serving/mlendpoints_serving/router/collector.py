"""Data collection and shadow comparison, off the request path.

The request path only appends a tuple of references (no copy, no serialisation) to a
bounded deque, or counts a drop when it is full. One daemon thread wakes every
`collectorFlushSeconds`, takes what is queued, serialises one JSON line per record
(contract.CollectedRecord), groups them by file and writes each file whole:

    <destination>/<endpoint>/<deployment>/<yyyy>/<mm>/<dd>/<hh>/<router-pod>-<seq>.jsonl

A local (or PVC) file is written under a hidden temporary name and renamed; an object
store gets one upload that appears whole when it completes. Either way a reader never
sees half a line. A destination that fails drops that batch (counted) and is reported
(`health`, and in cluster mode the collector-status ConfigMap the operator reads).

Mirrored requests also meet here: the live and the mirror answer of one request form a
pair, compared in the same thread with contract.compare_answers into the shadow metrics.
The thread is a daemon: a store that hangs can delay, but never block, the exit.
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import logging
import os
import posixpath
import threading
import time
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from mlendpoints_serving.contract import (
    COLLECTOR_SUFFIX,
    ENV_POD_NAME,
    CollectorHealth,
    CollectorRoute,
    collector_partition,
    compare_answers,
)

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

    from mlendpoints_serving.router.metrics import RouterMetrics
    from mlendpoints_serving.router.upstream import Headers

log = logging.getLogger("mlendpoints.router.collector")
NEVER_KEPT = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})
_MAX_ERROR = 400

# (route, endpoint, deployment, modelVersion, role, request id, wall time, latency s, status,
#  request body, request headers, response body)
Record = tuple[CollectorRoute, str, str, str | None, str, bytes, float, float, int, bytes, "Headers", bytes]
HealthReporter = Callable[[str, CollectorHealth], None]


def sampled(route: CollectorRoute, request_id: bytes) -> bool:
    """Deterministic by request id, so a live request and its mirror copy are kept or left together."""
    rate = route.samplingRate
    if rate >= 1.0:
        return True
    return rate > 0.0 and zlib.crc32(request_id) < rate * 4294967296.0


def body_field(body: bytes, limit: int) -> dict[str, Any]:
    size = len(body)
    cut = body[:limit] if size > limit else body
    try:
        out: dict[str, Any] = {"body": cut.decode("utf-8"), "encoding": "utf-8", "size": size}
    except UnicodeDecodeError:
        out = {"body": base64.b64encode(cut).decode(), "encoding": "base64", "size": size}
    if size > limit:
        out["truncated"] = True
    return out


def record_line(record: Record) -> tuple[bytes, str, str, str]:
    """One JSON line and the (destination, deployment, partition) it is filed under."""
    route, endpoint, deployment, version, role, request_id, wall, latency, status, req, headers, resp = record
    when = dt.datetime.fromtimestamp(wall, dt.UTC)
    doc: dict[str, Any] = {
        "requestId": request_id.decode("latin-1"),
        "endpoint": endpoint,
        "deployment": deployment,
        "modelVersion": version,
        "role": role,
        "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "latencyMs": round(latency * 1000, 3),
        "status": status,
    }
    if route.request:
        request = body_field(req, route.maxBodyBytes)
        if route.headers:
            keep = {h.lower() for h in route.headers} - NEVER_KEPT
            kept = {}
            for name, value in headers:
                lowered = name.decode("latin-1").lower()
                if lowered in keep:
                    kept[lowered] = value.decode("latin-1")
            request["headers"] = kept
        doc["request"] = request
    if route.response:
        doc["response"] = body_field(resp, route.maxBodyBytes)
    hour = when.hour if route.rolling == "hour" else None
    partition = collector_partition(endpoint, deployment, when.year, when.month, when.day, hour)
    return orjson.dumps(doc) + b"\n", route.destination, deployment, partition


class ShadowPair:
    """The live and the mirror answer of one mirrored request; the second to arrive submits the pair."""

    __slots__ = ("collector", "live", "live_name", "mirror", "mirror_name")

    def __init__(self, collector: Collector, live_name: str, mirror_name: str) -> None:
        self.collector = collector
        self.live_name = live_name
        self.mirror_name = mirror_name
        self.live: tuple[int, bytes, float] | None = None
        self.mirror: tuple[int, bytes, float] | None = None

    def set_live(self, status: int, body: bytes, latency: float) -> None:
        self.live = (status, body, latency)
        if self.mirror is not None:
            self.collector.offer_pair(self)

    def set_mirror(self, status: int, body: bytes, latency: float) -> None:
        self.mirror = (status, body, latency)
        if self.live is not None:
            self.collector.offer_pair(self)


class Collector:
    """The bounded queues and the writer thread."""

    def __init__(
        self,
        metrics: RouterMetrics,
        capacity: Callable[[], int],
        flush_seconds: Callable[[], float],
        pod_name: str | None = None,
        report: HealthReporter | None = None,
    ) -> None:
        self.metrics = metrics
        self._capacity = capacity
        self._flush_seconds = flush_seconds
        self.pod = pod_name or os.environ.get(ENV_POD_NAME) or os.uname().nodename
        self._report = report
        self._records: collections.deque[Record] = collections.deque()
        self._pairs: collections.deque[ShadowPair] = collections.deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        self._seq = 0
        self._start_ms = int(time.time() * 1000)
        self._filesystems: dict[str, tuple[AbstractFileSystem, str, bool]] = {}
        self.health: dict[str, CollectorHealth] = {}
        self._counts: dict[str, list[int]] = {}  # deployment -> [written, dropped]
        self._reported: dict[str, tuple[bool, str | None, float]] = {}
        self._drop_children: dict[tuple[str, str], Any] = {}
        self._diff_max: dict[tuple[str, str], float] = {}

    def set_reporter(self, report: HealthReporter) -> None:
        self._report = report

    # --- the request path: O(1), never blocks --------------------------------------------
    def offer(self, record: Record) -> None:
        if len(self._records) >= self._capacity():
            self._dropped(record[2], "queue_full")
            return
        self._records.append(record)
        self._ensure_thread()

    def offer_pair(self, pair: ShadowPair) -> None:
        if len(self._pairs) >= self._capacity():
            self.metrics.shadow_dropped.labels(pair.live_name, pair.mirror_name).inc()
            return
        self._pairs.append(pair)
        self._ensure_thread()

    def _dropped(self, deployment: str, reason: str, count: int = 1) -> None:
        key = (deployment, reason)
        child = self._drop_children.get(key)
        if child is None:
            child = self._drop_children[key] = self.metrics.collector_dropped.labels(deployment, reason)
        child.inc(count)
        self._counts.setdefault(deployment, [0, 0])[1] += count

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="collector", daemon=True)
            self._thread.start()

    # --- shutdown --------------------------------------------------------------------------
    def flush(self, timeout: float) -> bool:
        """Write everything queued, waiting at most `timeout` seconds; whether it all went out.
        Blocking: call it from a thread (`asyncio.to_thread`)."""
        if self._thread is None:
            return True
        deadline = time.monotonic() + timeout
        self._stopping.set()
        self._wake.set()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        done = not self._thread.is_alive()
        if not done:
            left = len(self._records)
            log.error("collector: %d records not written within the %.1f s shutdown budget", left, timeout)
        return done

    # --- the writer thread -------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            stopping = self._stopping.is_set()
            if not stopping:
                self._wake.wait(self._flush_seconds())
                self._wake.clear()
            try:
                self._compare_pairs()
                self._write_queued()
            except Exception:  # never let the thread die: the next round tries again
                log.exception("collector round failed")
            if stopping and not self._records:
                return

    def _compare_pairs(self) -> None:
        while self._pairs:
            pair = self._pairs.popleft()
            assert pair.live is not None and pair.mirror is not None
            (live_status, live_body, live_latency) = pair.live
            (mirror_status, mirror_body, mirror_latency) = pair.mirror
            labels = (pair.live_name, pair.mirror_name)
            metrics = self.metrics
            metrics.shadow_compared.labels(*labels).inc()
            if live_status == mirror_status:
                metrics.shadow_status_match.labels(*labels).inc()
            metrics.shadow_latency.labels(pair.live_name, "live").observe(live_latency)
            metrics.shadow_latency.labels(pair.mirror_name, "mirror").observe(mirror_latency)
            if not (200 <= live_status < 300 and 200 <= mirror_status < 300):
                continue
            result = compare_answers(live_body, mirror_body)
            if result.equal:
                metrics.shadow_agreed.labels(*labels).inc()
            if result.labels:
                metrics.shadow_labels.labels(*labels).inc(result.labels)
                metrics.shadow_labels_equal.labels(*labels).inc(result.labels_equal)
            if result.numbers:
                metrics.shadow_abs_diff.labels(*labels).observe(result.abs_diff_sum / result.numbers)
                if result.abs_diff_max > self._diff_max.get(labels, -1.0):
                    self._diff_max[labels] = result.abs_diff_max
                    metrics.shadow_abs_diff_max.labels(*labels).set(result.abs_diff_max)

    def _write_queued(self) -> None:
        if not self._records:
            return
        files: dict[tuple[str, str, str], list[bytes]] = {}
        records = self._records
        for _ in range(len(records)):
            line, destination, deployment, partition = record_line(records.popleft())
            files.setdefault((destination, deployment, partition), []).append(line)
        failed: dict[str, str] = {}
        for (destination, deployment, partition), lines in files.items():
            try:
                self._write_file(destination, partition, b"".join(lines))
            except Exception as exc:
                failed[deployment] = failed.get(deployment) or _describe(exc, destination)
                self._dropped(deployment, "write_failed", len(lines))
                continue
            self.metrics.collector_written.labels(deployment).inc(len(lines))
            self.metrics.collector_files.labels(deployment).inc()
            self._counts.setdefault(deployment, [0, 0])[0] += len(lines)
            failed.setdefault(deployment, "")
        for deployment, error in failed.items():
            self._set_health(deployment, error or None)

    def _write_file(self, destination: str, partition: str, data: bytes) -> None:
        fs, root, local = self._filesystem(destination)
        self._seq += 1
        name = f"{self.pod}-{self._start_ms:013d}{self._seq:06d}{COLLECTOR_SUFFIX}"
        folder = posixpath.join(root, partition) if root else partition
        final = posixpath.join(folder, name)
        if local:
            os.makedirs(folder, exist_ok=True)
            temporary = posixpath.join(folder, f".{name}.tmp")
            with open(temporary, "wb") as out:
                out.write(data)
            os.replace(temporary, final)  # atomic on one filesystem: the file appears whole
        else:
            fs.pipe_file(final, data)  # one upload: the object appears when it is complete

    def _filesystem(self, destination: str) -> tuple[AbstractFileSystem, str, bool]:
        cached = self._filesystems.get(destination)
        if cached is None:
            import fsspec  # imported on first use: a router without collection never loads it

            fs, root = fsspec.core.url_to_fs(destination)
            protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
            local = "file" in protocols or "local" in protocols
            cached = self._filesystems[destination] = (fs, root.rstrip("/"), local)
        return cached

    def _set_health(self, deployment: str, error: str | None) -> None:
        written, dropped = self._counts.get(deployment, [0, 0])
        now = dt.datetime.now(dt.UTC)
        health = CollectorHealth(
            ok=error is None,
            error=error,
            at=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            written=written,
            dropped=dropped,
        )
        self.health[deployment] = health
        self.metrics.collector_healthy.labels(deployment).set(1 if error is None else 0)
        previous = self._reported.get(deployment)
        # Reported on a change, and every 60 s while failing (the operator reads a fresh `at`).
        if (
            previous is None
            or (previous[0], previous[1]) != (health.ok, error)
            or (error is not None and time.monotonic() - previous[2] > 60)
        ):
            if error is not None:
                log.error("collector: writing %s's records failed: %s", deployment, error)
            else:
                log.info("collector: %s's destination is writable", deployment)
            self._reported[deployment] = (health.ok, error, time.monotonic())
            if self._report is not None:
                try:
                    self._report(deployment, health)
                except Exception as exc:
                    log.warning("collector: cannot report %s's health: %s", deployment, exc)


def _describe(exc: BaseException, destination: str) -> str:
    """The error, named for the condition: type and message, never a credential (none is in them)."""
    text = f"{destination}: {type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= _MAX_ERROR else text[: _MAX_ERROR - 3] + "..."
