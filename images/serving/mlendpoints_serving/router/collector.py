"""Data collection and shadow comparison, off the request path.

The request path only appends a tuple of references (no copy, no serialisation) to a
bounded deque, or counts a drop when it is full. A background task on the event loop wakes
every `collectorFlushSeconds`, serialises one JSON line per queued record
(contract.CollectedRecord) in slices that yield to the loop between them, groups the lines
by file and hands the batch to a daemon writer thread, which writes each file whole:

    <destination>/<endpoint>/<deployment>/<yyyy>/<mm>/<dd>/<hh>/<router-pod>-<seq>.jsonl

A local (or PVC) file is written under a hidden temporary name and renamed; an object
store gets one upload that appears whole when it completes. Either way a reader never
sees half a line. A destination that fails drops that batch (counted) and is reported
(`health`, and in cluster mode the collector-status ConfigMap the operator reads).

Mirrored requests also meet here: the live and the mirror answer of one request form a
pair, compared by the same task with contract.compare_answers into the shadow metrics.
The writer is a daemon thread: a store that hangs can delay, but never block, the exit.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import datetime as dt
import logging
import os
import posixpath
import queue
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
CHUNK = 256  # records serialised (or pairs compared) between two yields to the event loop
MAX_PENDING = 2  # serialised batches the writer thread may have waiting

# (route, endpoint, deployment, modelVersion, role, request id, wall time, latency s, status,
#  request body, request headers, response body)
Record = tuple[
    CollectorRoute, str, str, str | None, str, bytes, float, float, int, bytes, "Headers | None", bytes
]
HealthReporter = Callable[[str, CollectorHealth], None]


def sampled(route: CollectorRoute, request_id: bytes) -> bool:
    """Deterministic by request id, so a live request and its mirror copy are kept or left together."""
    rate = route.samplingRate
    if rate >= 1.0:
        return True
    return rate > 0.0 and zlib.crc32(request_id) < rate * 4294967296.0


def body_json(body: bytes, limit: int, headers: bytes | None = None) -> bytes:
    """A CollectedBody as JSON: the text (base64 when it is not UTF-8), cut at `limit` and marked."""
    size = len(body)
    cut = body[:limit] if size > limit else body
    try:
        out = b'{"body":%b,"encoding":"utf-8","size":%d' % (orjson.dumps(cut.decode("utf-8")), size)
    except UnicodeDecodeError:
        out = b'{"body":"%b","encoding":"base64","size":%d' % (base64.b64encode(cut), size)
    if size > limit:
        out += b',"truncated":true'
    if headers is not None:
        out += b',"headers":' + headers
    return out + b"}"


def body_field(body: bytes, limit: int) -> dict[str, Any]:
    return orjson.loads(body_json(body, limit))  # type: ignore[no-any-return]


_SECONDS: dict[int, tuple[bytes, tuple[int, int, int, int]]] = {}  # whole second -> (ISO prefix, y m d h)
_PARTITIONS: dict[tuple[str, str, int, int, int, int | None], str] = {}
_CONSTANTS: dict[tuple[str, str, str | None, str], bytes] = {}


def _second(wall: float) -> tuple[bytes, tuple[int, int, int, int]]:
    """Formatting a time costs microseconds; records come thousands a second: once per second."""
    second = int(wall)
    cached = _SECONDS.get(second)
    if cached is None:
        if len(_SECONDS) > 64:
            _SECONDS.clear()
        when = dt.datetime.fromtimestamp(second, dt.UTC)
        cached = _SECONDS[second] = (
            when.strftime("%Y-%m-%dT%H:%M:%S").encode(),
            (when.year, when.month, when.day, when.hour),
        )
    return cached


def _partition(endpoint: str, deployment: str, ymdh: tuple[int, int, int, int], hourly: bool) -> str:
    key = (endpoint, deployment, ymdh[0], ymdh[1], ymdh[2], ymdh[3] if hourly else None)
    cached = _PARTITIONS.get(key)
    if cached is None:
        if len(_PARTITIONS) > 1024:
            _PARTITIONS.clear()
        cached = _PARTITIONS[key] = collector_partition(*key)
    return cached


def _constants(endpoint: str, deployment: str, version: str | None, role: str) -> bytes:
    key = (endpoint, deployment, version, role)
    cached = _CONSTANTS.get(key)
    if cached is None:
        if len(_CONSTANTS) > 1024:
            _CONSTANTS.clear()
        fields = {"endpoint": endpoint, "deployment": deployment, "modelVersion": version, "role": role}
        cached = _CONSTANTS[key] = orjson.dumps(fields)[1:-1]
    return cached


def _route_plan(route: CollectorRoute) -> tuple[frozenset[str] | None, int, bool, bool, bool]:
    """What a route asks of each record, worked out once per route object, not per record."""
    cached = _PLANS.get(id(route))
    if cached is None or cached[0] is not route:
        if len(_PLANS) > 1024:
            _PLANS.clear()
        keep = frozenset(h.lower() for h in route.headers) - NEVER_KEPT if route.headers else None
        plan = (keep, route.maxBodyBytes, route.request, route.response, route.rolling == "hour")
        cached = _PLANS[id(route)] = (route, plan)  # the route kept: its id is not reused meanwhile
    return cached[1]


_PLANS: dict[int, tuple[CollectorRoute, tuple[frozenset[str] | None, int, bool, bool, bool]]] = {}


_HEAD = b'{"requestId":%b,%b,"time":"%b.%03dZ","latencyMs":%d.%03d,"status":%d'
_BOTH = (
    _HEAD + b',"request":{"body":%b,"encoding":"utf-8","size":%d}'
    b',"response":{"body":%b,"encoding":"utf-8","size":%d}}\n'
)


FileKey = tuple[str, str, str]  # (destination, deployment, partition): the lines of one file
# What every record of one second, route and (endpoint, deployment, version, role) shares: worked out on
# the first such record, a single lookup for the rest.
_Shared = tuple[CollectorRoute, bytes, bytes, FileKey, frozenset[str] | None, int, bool, bool]
_SHARED: dict[tuple[int, int, str, str, str | None, str], _Shared] = {}


def _shared(key: tuple[int, int, str, str, str | None, str], route: CollectorRoute) -> _Shared:
    second, _, endpoint, deployment, version, role = key
    if len(_SHARED) > 1024:
        _SHARED.clear()
    prefix, ymdh = _second(second)
    keep, limit, request, response, hourly = _route_plan(route)
    filed = (route.destination, deployment, _partition(endpoint, deployment, ymdh, hourly))
    constants = _constants(endpoint, deployment, version, role)
    shared = (route, prefix, constants, filed, keep, limit, request, response)
    _SHARED[key] = shared  # the route kept in it: its id is not reused while the entry lives
    return shared


def record_line(record: Record) -> tuple[bytes, str, str, str]:
    """One JSON line (contract.CollectedRecord) and the (destination, deployment, partition) it is
    filed under."""
    line, filed = _line(record)
    return line, *filed


def _line(record: Record) -> tuple[bytes, FileKey]:
    """Formatted with bytes templates, the parts shared by a second's records cached, the common case
    (both bodies UTF-8 and whole, no headers kept) in one template: thousands a second, on the loop."""
    route, endpoint, deployment, version, role, request_id, wall, latency, status, req, headers, resp = record
    key = (int(wall), id(route), endpoint, deployment, version, role)
    shared = _SHARED.get(key)
    if shared is None or shared[0] is not route:
        shared = _shared(key, route)
    _, prefix, constants, filed, keep, limit, request, response = shared
    micros = int(latency * 1_000_000)  # integers format faster than floats
    rid = orjson.dumps(request_id.decode("latin-1"))
    millis = int((wall % 1) * 1000)
    if request and response and keep is None and len(req) <= limit and len(resp) <= limit:
        try:
            line = _BOTH % (
                rid, constants, prefix, millis, micros // 1000, micros % 1000, status,
                orjson.dumps(req.decode("utf-8")), len(req), orjson.dumps(resp.decode("utf-8")), len(resp),
            )  # fmt: skip
            return line, filed
        except UnicodeDecodeError:
            pass  # base64: the general case below
    head = _HEAD % (rid, constants, prefix, millis, micros // 1000, micros % 1000, status)
    return _rest(head, req, resp, headers, keep, limit, request, response), filed


def _rest(
    line: bytes,
    req: bytes,
    resp: bytes,
    headers: Headers | None,
    keep: frozenset[str] | None,
    limit: int,
    request: bool,
    response: bool,
) -> bytes:
    if request:
        kept = None
        if keep is not None:
            found = {}
            for name, value in headers or ():
                lowered = name.decode("latin-1").lower()
                if lowered in keep:
                    found[lowered] = value.decode("latin-1")
            kept = orjson.dumps(found)
        line += b',"request":' + body_json(req, limit, kept)
    if response:
        line += b',"response":' + body_json(resp, limit)
    return line + b"}\n"


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
    """The bounded queues, the serialising task on the event loop and the writer thread.

    Serialising and comparing are CPU work: they run on the event loop in slices of CHUNK records
    (yielding between slices), so they never contend with request handling for the GIL from another
    thread. Only file I/O runs in the writer thread, which takes at most MAX_PENDING batches: while it
    is behind (a slow or stalled store), records stay in the bounded queue and the excess is dropped.
    """

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
        self._queue_capacity = capacity()  # read again each round (a config change applies within one)
        self._pairs: collections.deque[ShadowPair] = collections.deque()
        self._batches: queue.Queue[dict[tuple[str, str, str], list[bytes]]] = queue.Queue(MAX_PENDING)
        self._stopping = threading.Event()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._round_lock = asyncio.Lock()
        self._closing = False
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
        queued, capacity = len(self._records), self._queue_capacity
        if queued >= capacity:
            self._dropped(record[2], "queue_full")
            return
        self._records.append(record)
        if self._task is None:
            self._start()
        elif queued == capacity // 2:
            self._wake.set()  # half full: write now rather than at the next tick

    def offer_pair(self, pair: ShadowPair) -> None:
        if len(self._pairs) >= self._capacity():
            self.metrics.shadow_dropped.labels(pair.live_name, pair.mirror_name).inc()
            return
        self._pairs.append(pair)
        if self._task is None:
            self._start()

    def _dropped(self, deployment: str, reason: str, count: int = 1) -> None:
        key = (deployment, reason)
        child = self._drop_children.get(key)
        if child is None:
            child = self._drop_children[key] = self.metrics.collector_dropped.labels(deployment, reason)
        child.inc(count)
        self._counts.setdefault(deployment, [0, 0])[1] += count

    def _start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._every_flush())

    # --- on the event loop ------------------------------------------------------------------
    async def _every_flush(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._flush_seconds())
            self._wake.clear()
            try:
                await self._round()
            except Exception:  # never let the task die: the next round tries again
                log.exception("collector round failed")

    async def _round(self) -> bool:
        """Compare the pairs, serialise the queued records into one batch for the writer; False when
        the writer is behind (the records wait in the bounded queue). One round at a time."""
        async with self._round_lock:
            return await self._round_alone()

    async def _round_alone(self) -> bool:
        self._queue_capacity = self._capacity()
        pairs = self._pairs
        for i in range(len(pairs)):
            if not pairs:
                break
            self._compare(pairs.popleft())
            if i % CHUNK == CHUNK - 1:
                await asyncio.sleep(0)
        if not self._records:
            return True
        if self._batches.full():
            return False
        files: dict[tuple[str, str, str], list[bytes]] = {}
        records = self._records
        popleft = records.popleft
        for _ in range(-(-len(records) // CHUNK)):
            for _ in range(min(CHUNK, len(records))):
                line, key = _line(popleft())
                lines = files.get(key)
                if lines is None:
                    files[key] = [line]
                else:
                    lines.append(line)
            await asyncio.sleep(0)
        self._batches.put_nowait(files)
        if self._thread is None:
            self._thread = threading.Thread(target=self._write_forever, name="collector", daemon=True)
            self._thread.start()
        return True

    async def aflush(self, timeout: float) -> bool:
        """On shutdown: write everything queued, within `timeout` seconds; whether it all went out.
        The writer thread is a daemon: a store that hangs cannot keep the process past the budget."""
        deadline = time.monotonic() + timeout
        self._closing = True
        if self._task is not None:  # let a round under way finish: its records are already taken
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), max(0.0, deadline - time.monotonic()))
        while (self._records or self._pairs) and time.monotonic() < deadline:
            if not await self._round():
                await asyncio.sleep(0.05)
        self._stopping.set()
        done = not (self._records or self._pairs)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, max(0.0, deadline - time.monotonic()))
            done = done and not self._thread.is_alive()
        if not done:
            left = len(self._records) + sum(len(v) for b in list(self._batches.queue) for v in b.values())
            log.error("collector: %d records not written within the %.1f s shutdown budget", left, timeout)
        return done

    def _compare(self, pair: ShadowPair) -> None:
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
            return
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

    # --- the writer thread: file I/O only ----------------------------------------------------
    def _write_forever(self) -> None:
        while True:
            try:
                files = self._batches.get(timeout=0.1)
            except queue.Empty:
                if self._stopping.is_set():
                    return
                continue
            try:
                self._write_batch(files)
            except Exception:
                log.exception("collector batch failed")

    def _write_batch(self, files: dict[tuple[str, str, str], list[bytes]]) -> None:
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
