"""Shadow comparison from collected records: `mlendpoints compare` and its Python function.

Reads the JSON lines the router's collector wrote (contract.CollectedRecord) under
`<destination>/<endpoint>/`, joins each mirror record to the live record of the same
request id, and reports per (live, mirror) deployment pair: requests compared,
agreement (contract.compare_answers: labels exact, numbers within 1e-9), label agreement,
mean and max absolute difference of numbers, status codes, latency p50 and p99.
The router's shadow metrics count with the same function, on the fly.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import ValidationError

from mlendpoints.errors import UserError
from mlendpoints_serving.contract import COLLECTOR_SUFFIX, CollectedBody, CollectedRecord, compare_answers

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str) -> dt.timedelta:
    """'90s', '30m', '1h', '2d' -> a duration."""
    match = _DURATION.match(text)
    if not match:
        raise UserError(f"--since {text!r}: expected a number and a unit, s, m, h or d (e.g. 1h)")
    return dt.timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


@dataclass
class PairReport:
    """The agreement of one mirror deployment with the live deployments it shadowed."""

    live: str
    mirror: str
    compared: int = 0
    agreed: int = 0
    agreement: float | None = None  # agreed / compared; None when no response bodies were collected
    labels: int = 0
    labels_equal: int = 0
    label_agreement: float | None = None
    numbers: int = 0
    mean_abs_diff: float | None = None
    max_abs_diff: float | None = None
    status_match: int = 0
    live_status: dict[str, int] = field(default_factory=dict)
    mirror_status: dict[str, int] = field(default_factory=dict)
    live_latency_ms: dict[str, float | None] = field(default_factory=dict)  # p50, p99
    mirror_latency_ms: dict[str, float | None] = field(default_factory=dict)
    skipped: int = 0  # pairs whose response body was not collected or was truncated

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def read_records(
    destination: str,
    endpoint: str,
    since: dt.timedelta,
    now: dt.datetime | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Iterator[CollectedRecord]:
    """The records of `endpoint` under `destination` whose request arrived within `since` of `now`.

    Only the day folders the window touches are listed; a file whose name starts with '.' (a
    temporary one still being written) is never read.
    """
    import fsspec

    now = now or dt.datetime.now(dt.UTC)
    start = now - since
    fs, root = fsspec.core.url_to_fs(destination, **(storage_options or {}))
    base = f"{root.rstrip('/')}/{endpoint}"
    try:
        deployments = [p for p in fs.ls(base, detail=False)]
    except FileNotFoundError:
        return
    days = []
    day = start.date()
    while day <= now.date():
        days.append(day)
        day += dt.timedelta(days=1)
    for deployment_dir in deployments:
        for day in days:
            folder = f"{deployment_dir.rstrip('/')}/{day.year:04d}/{day.month:02d}/{day.day:02d}"
            try:
                files = sorted(fs.find(folder))
            except FileNotFoundError:
                continue
            for path in files:
                name = path.rsplit("/", 1)[-1]
                if name.startswith(".") or not name.endswith(COLLECTOR_SUFFIX):
                    continue
                yield from _records_in(fs.cat_file(path), start, now)


def _records_in(data: bytes, start: dt.datetime, now: dt.datetime) -> Iterator[CollectedRecord]:
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            record = CollectedRecord.model_validate_json(line)
        except ValidationError:
            continue  # not a record of this version: skipped rather than failing the report
        when = dt.datetime.fromisoformat(record.time.replace("Z", "+00:00"))
        if start <= when <= now:
            yield record


def _text(body: CollectedBody | None) -> str | bytes | None:
    if body is None or body.truncated:
        return None
    return base64.b64decode(body.body) if body.encoding == "base64" else body.body


def compare_records(records: Iterable[CollectedRecord]) -> list[PairReport]:
    """Join mirror records to live ones by request id; one report per (live, mirror) pair."""
    live: dict[str, CollectedRecord] = {}
    mirrors: list[CollectedRecord] = []
    for record in records:
        if record.role == "live":
            live[record.requestId] = record
        else:
            mirrors.append(record)
    reports: dict[tuple[str, str], PairReport] = {}
    latencies: dict[tuple[str, str], tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    statuses: dict[tuple[str, str], tuple[Counter[str], Counter[str]]] = defaultdict(
        lambda: (Counter(), Counter())
    )
    diff_sums: dict[tuple[str, str], float] = defaultdict(float)
    for shadow in mirrors:
        original = live.get(shadow.requestId)
        if original is None:
            continue  # the live record was not sampled, or lies outside the window
        key = (original.deployment, shadow.deployment)
        report = reports.setdefault(key, PairReport(live=key[0], mirror=key[1]))
        report.compared += 1
        statuses[key][0][str(original.status)] += 1
        statuses[key][1][str(shadow.status)] += 1
        latencies[key][0].append(original.latencyMs)
        latencies[key][1].append(shadow.latencyMs)
        if original.status == shadow.status:
            report.status_match += 1
        a, b = _text(original.response), _text(shadow.response)
        if a is None or b is None:
            report.skipped += 1
            continue
        if not (200 <= original.status < 300 and 200 <= shadow.status < 300):
            continue
        result = compare_answers(a, b)
        report.agreed += result.equal
        report.labels += result.labels
        report.labels_equal += result.labels_equal
        if result.numbers:
            report.numbers += result.numbers
            diff_sums[key] += result.abs_diff_sum
            report.max_abs_diff = max(report.max_abs_diff or 0.0, result.abs_diff_max)
    for key, report in reports.items():
        judged = report.compared - report.skipped
        report.agreement = report.agreed / judged if judged else None
        report.label_agreement = report.labels_equal / report.labels if report.labels else None
        report.mean_abs_diff = diff_sums[key] / report.numbers if report.numbers else None
        report.live_status = dict(sorted(statuses[key][0].items()))
        report.mirror_status = dict(sorted(statuses[key][1].items()))
        live_ms, mirror_ms = latencies[key]
        report.live_latency_ms = {"p50": percentile(live_ms, 50), "p99": percentile(live_ms, 99)}
        report.mirror_latency_ms = {"p50": percentile(mirror_ms, 50), "p99": percentile(mirror_ms, 99)}
    return [reports[key] for key in sorted(reports)]


def compare(
    endpoint: str,
    destinations: Iterable[str],
    since: dt.timedelta | str = "1h",
    now: dt.datetime | None = None,
    storage_options: dict[str, Any] | None = None,
) -> list[PairReport]:
    """`mlendpoints compare` as a function: the records of every destination, joined and compared."""
    window = parse_since(since) if isinstance(since, str) else since
    records: list[CollectedRecord] = []
    for destination in dict.fromkeys(destinations):
        records.extend(read_records(destination, endpoint, window, now, storage_options))
    return compare_records(records)
