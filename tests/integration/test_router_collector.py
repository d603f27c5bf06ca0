"""Data collection by the router, as a real process, in front of real model servers and echo backends:
a local folder, S3 (moto's server), GCS (gcp-storage-emulator) and Azure (Azurite); sampling,
truncation, the file layout, Authorization never written, mirror records joined to live ones
(`mlendpoints.compare`) and the router's shadow metrics, a failing or hanging destination never failing
a live request, SIGTERM flushing the queue."""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from examples.models import save_diabetes_regressor
from mlendpoints.compare import compare, read_records
from mlendpoints_serving.contract import CollectedRecord
from tests.fixtures.emulators import AZURITE_ACCOUNT, azure_connection_string, azurite, gcs_emulator
from tests.fixtures.servers import free_port, running
from tests.integration.batch_support import moto_s3
from tests.integration.router_support import REPO, ROUTER, Backends, until
from tests.unit.serving.support import serve

KEYS = {"primaryKey": "primary-secret-never-written", "secondaryKey": "secondary-secret"}
AUTH = {"authorization": f"Bearer {KEYS['primaryKey']}"}
POD = "router-test-pod"
FILE_NAME = re.compile(rf"^{POD}-\d{{19}}\.jsonl$")
DIABETES_COLS = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


class Router:
    def __init__(self, url: str, proc: Any, config_path: Path) -> None:
        self.url, self.proc, self.config_path = url, proc, config_path
        self.client = httpx.Client(base_url=url, timeout=30)

    def write_config(self, config: dict[str, Any]) -> None:
        config = {"endpoint": "e", "authMode": "key", "keysFile": "keys.json", **config}
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(config))
        tmp.replace(self.config_path)

    def metric(self, name: str, **labels: str) -> float:
        total = 0.0
        for line in self.client.get("/metrics").text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total


@pytest.fixture
def start_router(tmp_path: Path) -> Iterator[Callable[..., Router]]:
    with contextlib.ExitStack() as stack:

        def start(config: dict[str, Any], env: dict[str, str] | None = None, *args: str) -> Router:
            (tmp_path / "keys.json").write_text(json.dumps(KEYS))
            config = {"endpoint": "e", "authMode": "key", "keysFile": "keys.json", **config}
            port = free_port()
            path = tmp_path / "router.json"
            path.write_text(json.dumps(config))
            argv = [*ROUTER, "--config", str(path), "--port", str(port), "--host", "127.0.0.1", *args]
            proc = stack.enter_context(
                running(
                    argv,
                    ready_url=f"http://127.0.0.1:{port}/health",
                    log=tmp_path / "router.log",
                    cwd=REPO,
                    env={"MLENDPOINTS_POD_NAME": POD, **(env or {})},
                )
            )
            router = Router(f"http://127.0.0.1:{port}", proc, path)
            stack.callback(router.client.close)
            return router

        yield start


@pytest.fixture
def backends(tmp_path: Path) -> Iterator[Backends]:
    with contextlib.ExitStack() as stack:
        yield Backends(stack, tmp_path)


def collector(destination: str, **settings: Any) -> dict[str, Any]:
    return {"destination": destination, **settings}


def jsonl_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def local_records(root: Path) -> list[dict[str, Any]]:
    out = []
    for path in jsonl_files(root):
        out += [json.loads(line) for line in path.read_bytes().splitlines()]
    return out


# --- local folder ------------------------------------------------------------------------------
def test_local_folder_layout_sampling_truncation_and_no_authorization(
    backends: Backends, start_router: Callable[..., Router], tmp_path: Path
) -> None:
    blue = backends.start("blue")
    root = tmp_path / "collected"
    route = collector(str(root), samplingRate=0.3, maxBodyBytes=200, headers=["x-trace", "authorization"])
    router = start_router(
        {
            "deployments": {"blue": {"backends": [blue], "modelVersion": "7", "collector": route}},
            "traffic": {"blue": 100},
            "collectorFlushSeconds": 0.2,
        }
    )
    n = 800
    small = {"x": 1}
    large = {"payload": "y" * 1000}
    for i in range(n):
        body = large if i % 10 == 0 else small
        headers = {**AUTH, "x-trace": f"t{i}", "x-other": "not kept"}
        assert router.client.post("/score", json=body, headers=headers).status_code == 200
    p = 0.3
    bound = 5 * math.sqrt(n * p * (1 - p))  # 5 standard deviations of the binomial count
    until(lambda: len(local_records(root)) >= n * p - bound, within=10)
    time.sleep(0.5)  # a last flush
    records = local_records(root)
    assert abs(len(records) - n * p) < bound, len(records)

    # Layout: <root>/<endpoint>/<deployment>/<yyyy>/<mm>/<dd>/<hh>/<pod>-<seq>.jsonl, no temporary left.
    for path in jsonl_files(root):
        parts = path.relative_to(root).parts
        assert parts[:2] == ("e", "blue"), parts
        assert [len(x) for x in parts[2:6]] == [4, 2, 2, 2] and all(x.isdigit() for x in parts[2:6])
        assert FILE_NAME.match(parts[6]), parts[6]
        assert path.read_bytes().endswith(b"\n")

    for raw in records:
        record = CollectedRecord.model_validate(raw)
        assert (record.endpoint, record.deployment, record.modelVersion, record.role) == (
            "e",
            "blue",
            "7",
            "live",
        )
        assert record.status == 200 and record.latencyMs > 0 and len(record.requestId) == 32
        assert partition_of(record) in {str(p.relative_to(root).parent) for p in jsonl_files(root)}
        assert record.request is not None and record.response is not None
        # Kept: the listed header; never Authorization (listed or not), nor unlisted ones.
        assert record.request.headers is not None and set(record.request.headers) == {"x-trace"}
        if record.request.size > 200:
            assert record.request.truncated and len(record.request.body) == 200
            assert record.response.truncated and len(record.response.body) == 200
        else:
            assert not record.request.truncated and json.loads(record.request.body) == small
    assert any(r["request"].get("truncated") for r in records)
    everything = b"".join(p.read_bytes() for p in jsonl_files(root))
    assert KEYS["primaryKey"].encode() not in everything and b"Bearer" not in everything
    assert router.metric("mlendpoints_router_collector_records_written_total", deployment="blue") == len(
        records
    )


def partition_of(record: CollectedRecord) -> str:
    day, clock = record.time.split("T")
    yyyy, mm, dd = day.split("-")
    return f"e/blue/{yyyy}/{mm}/{dd}/{clock[:2]}"


def test_response_only_and_day_rolling(
    backends: Backends, start_router: Callable[..., Router], tmp_path: Path
) -> None:
    blue = backends.start("blue")
    root = tmp_path / "collected"
    route = collector(str(root), request=False, rolling="day")
    router = start_router(
        {
            "deployments": {"blue": {"backends": [blue], "collector": route}},
            "traffic": {"blue": 100},
            "collectorFlushSeconds": 0.1,
        }
    )
    ids = [f"client-id-{i}" for i in range(20)]
    for request_id in ids:
        router.client.post("/score", json={"x": 1}, headers={**AUTH, "x-request-id": request_id})
    until(lambda: len(local_records(root)) == len(ids), within=10)
    records = local_records(root)
    assert sorted(r["requestId"] for r in records) == sorted(ids)  # the client's ids are kept
    assert all("request" not in r and r["response"]["body"] for r in records)
    assert {len(p.relative_to(root).parts) for p in jsonl_files(root)} == {6}  # no <hh> level


# --- S3, mirror join, comparison ----------------------------------------------------------------
@pytest.fixture(scope="module")
def model_servers(
    model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """Three real model servers: the diabetes model twice (same version) and a Ridge of another alpha."""
    logs = tmp_path_factory.mktemp("serve-logs")
    other = save_diabetes_regressor(tmp_path_factory.mktemp("other") / "model", alpha=0.05)
    with (
        serve(model_dirs["diabetes"], logs / "blue.log") as blue,
        serve(model_dirs["diabetes"], logs / "same.log") as same,
        serve(other, logs / "other.log") as different,
    ):
        yield {
            name: s.url.removeprefix("http://")
            for name, s in (("blue", blue), ("same", same), ("other", different))
        }


def score_rows(router: Router, count: int) -> None:
    for i in range(count):
        row = [((i * 7 + j * 3) % 11 - 5) / 100 for j in range(len(DIABETES_COLS))]
        body = {"dataframe_split": {"columns": DIABETES_COLS, "data": [row, row[::-1]]}}
        response = router.client.post("/invocations", json=body, headers=AUTH)
        assert response.status_code == 200, response.text


def test_s3_mirror_records_join_live_ones_and_compare_agrees_by_version(
    model_servers: dict[str, str],
    start_router: Callable[..., Router],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with moto_s3(tmp_path / "moto.log") as env:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"]).create_bucket(Bucket="records")
        destination = "s3://records/online"
        route = collector(destination)
        deployments = {
            name: {"backends": [address], "modelVersion": version, "collector": route}
            for (name, address), version in zip(model_servers.items(), ["1", "1", "2"], strict=True)
        }
        config = {
            "deployments": deployments,
            "traffic": {"blue": 100},
            "mirrorTraffic": {"same": 50},
            "collectorFlushSeconds": 0.2,
        }
        router = start_router(config, env)
        n = 120
        score_rows(router, n)
        mirrored = router.metric(
            "mlendpoints_router_mirror_requests_total", deployment="same", outcome="sent"
        )
        assert 30 < mirrored < 90

        def compared(mirror: str) -> float:
            return router.metric("mlendpoints_router_shadow_compared_total", live="blue", mirror=mirror)

        until(lambda: compared("same") == mirrored, within=10)
        assert router.metric("mlendpoints_router_shadow_agreed_total", live="blue", mirror="same") == mirrored

        router.write_config({**config, "mirrorTraffic": {"other": 50}})
        time.sleep(1.0)  # the config is polled every 0.2 s
        score_rows(router, n)
        mirrored_other = router.metric(
            "mlendpoints_router_mirror_requests_total", deployment="other", outcome="sent"
        )
        until(lambda: compared("other") == mirrored_other > 0, within=10)
        assert router.metric("mlendpoints_router_shadow_agreed_total", live="blue", mirror="other") == 0
        assert router.metric("mlendpoints_router_shadow_abs_diff_max", live="blue", mirror="other") > 0

        def written() -> float:
            return sum(
                router.metric("mlendpoints_router_collector_records_written_total", deployment=d)
                for d in deployments
            )

        until(lambda: written() == 2 * n + mirrored + mirrored_other, within=15)
        keys = [
            o["Key"]
            for o in boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
            .list_objects_v2(Bucket="records")
            .get("Contents", [])
        ]
        assert keys and all(
            re.match(rf"^online/e/(blue|same|other)/\d{{4}}/\d\d/\d\d/\d\d/{POD}-\d{{19}}\.jsonl$", k)
            for k in keys
        )

        records = list(read_records(destination, "e", since=__import__("datetime").timedelta(hours=1)))
        assert len(records) == 2 * n + mirrored + mirrored_other
        live_ids = {r.requestId for r in records if r.role == "live"}
        mirror_records = [r for r in records if r.role == "mirror"]
        assert mirror_records and all(r.requestId in live_ids for r in mirror_records)

        reports = {(r.live, r.mirror): r for r in compare("e", [destination], since="1h")}
        same, other = reports[("blue", "same")], reports[("blue", "other")]
        assert (same.compared, same.agreement, same.max_abs_diff) == (mirrored, 1.0, 0.0)
        assert same.live_status == {"200": mirrored} and same.status_match == mirrored
        assert same.live_latency_ms["p50"] is not None and same.mirror_latency_ms["p99"] is not None
        assert other.compared == mirrored_other and other.agreement is not None and other.agreement < 1.0
        assert other.mean_abs_diff is not None and other.mean_abs_diff > 0


# --- failures never reach live traffic --------------------------------------------------------------
@contextlib.contextmanager
def hanging_server() -> Iterator[str]:
    """Accepts connections and never answers: a stalled store."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


def test_missing_bucket_is_counted_and_reported_and_live_is_unaffected(
    backends: Backends, start_router: Callable[..., Router], tmp_path: Path
) -> None:
    blue = backends.start("blue")
    with moto_s3(tmp_path / "moto.log") as env:
        route = collector("s3://no-such-bucket/records")
        router = start_router(
            {
                "deployments": {"blue": {"backends": [blue], "collector": route}},
                "traffic": {"blue": 100},
                "collectorFlushSeconds": 0.1,
            },
            env,
        )
        for _ in range(30):
            assert router.client.post("/score", json={"x": 1}, headers=AUTH).status_code == 200
        until(
            lambda: router.metric("mlendpoints_router_collector_dropped_total", reason="write_failed") >= 30,
            within=20,
        )
        assert router.metric("mlendpoints_router_collector_destination_healthy", deployment="blue") == 0
        log = (tmp_path / "router.log").read_text()
        assert "no-such-bucket" in log and KEYS["primaryKey"] not in log and "testing" not in log


def test_hanging_store_fills_the_queue_drops_are_counted_and_requests_stay_fast(
    backends: Backends, start_router: Callable[..., Router]
) -> None:
    blue = backends.start("blue")
    with hanging_server() as url:
        env = {
            "AWS_ENDPOINT_URL": url,
            "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "s",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        route = collector("s3://stalled/records")
        router = start_router(
            {
                "deployments": {"blue": {"backends": [blue], "collector": route}},
                "traffic": {"blue": 100},
                "collectorFlushSeconds": 0.05,
                "collectorQueueRecords": 20,
            },
            env,
            "--collector-flush-timeout-s",
            "1",
        )
        time.sleep(0.1)
        slowest = 0.0
        for _ in range(200):
            started = time.perf_counter()
            assert router.client.post("/score", json={"x": 1}, headers=AUTH).status_code == 200
            slowest = max(slowest, time.perf_counter() - started)
        dropped = router.metric("mlendpoints_router_collector_dropped_total", reason="queue_full")
        assert dropped >= 200 - 2 * 20 - 20, dropped  # at most the queue and one batch in the writer
        assert slowest < 1.0, slowest
        # Shutdown with the store still hanging: the flush budget (1 s) bounds the exit.
        started = time.monotonic()
        os.killpg(router.proc.pid, signal.SIGTERM)
        router.proc.wait(timeout=20)
        assert time.monotonic() - started < 10


def test_sigterm_flushes_the_queue(
    backends: Backends, start_router: Callable[..., Router], tmp_path: Path
) -> None:
    blue = backends.start("blue")
    root = tmp_path / "collected"
    router = start_router(
        {
            "deployments": {"blue": {"backends": [blue], "collector": collector(str(root))}},
            "traffic": {"blue": 100},
            "collectorFlushSeconds": 3600,  # nothing is written before the signal
        }
    )
    for _ in range(50):
        assert router.client.post("/score", json={"x": 1}, headers=AUTH).status_code == 200
    time.sleep(0.3)
    assert local_records(root) == []
    os.killpg(router.proc.pid, signal.SIGTERM)
    assert router.proc.wait(timeout=30) == 0
    assert len(local_records(root)) == 50


# --- Google Cloud Storage and Azure Blob Storage, on their emulators ----------------------------------
# The router gets a store's credentials from its environment, as the pod does (the collector's
# credentialsSecret as envFrom): STORAGE_EMULATOR_HOST for gcsfs, AZURE_STORAGE_CONNECTION_STRING for adlfs.
CLOUD_KEY = re.compile(rf"^e/blue/\d{{4}}/\d\d/\d\d/\d\d/{POD}-\d{{19}}\.jsonl$")


def collect_to(
    backends: Backends, start_router: Callable[..., Router], destination: str, env: dict[str, str]
) -> Router:
    blue = backends.start("blue")
    route = collector(destination, headers=["authorization", "x-trace"])
    return start_router(
        {
            "deployments": {"blue": {"backends": [blue], "modelVersion": "3", "collector": route}},
            "traffic": {"blue": 100},
            "collectorFlushSeconds": 0.1,
        },
        env,
    )


def assert_collected(router: Router, n: int, files: Callable[[], dict[str, bytes]]) -> None:
    """n requests made: n records under <endpoint>/<deployment>/<yyyy>/<mm>/<dd>/<hh>/<pod>-<seq>.jsonl."""
    until(
        lambda: router.metric("mlendpoints_router_collector_records_written_total", deployment="blue") >= n,
        within=20,
    )
    found = files()
    assert found and all(CLOUD_KEY.match(key) for key in found), list(found)
    records = [
        CollectedRecord.model_validate_json(line) for data in found.values() for line in data.splitlines()
    ]
    assert len(records) == n and len({r.requestId for r in records}) == n
    assert all(
        (r.endpoint, r.deployment, r.modelVersion, r.status) == ("e", "blue", "3", 200) for r in records
    )
    assert all(r.request is not None and r.request.headers == {"x-trace": "t"} for r in records)
    everything = b"".join(found.values())
    assert KEYS["primaryKey"].encode() not in everything and b"Bearer" not in everything
    assert router.metric("mlendpoints_router_collector_destination_healthy", deployment="blue") == 1


def assert_refused_but_live(router: Router, tmp_path: Path, secret: str) -> None:
    for _ in range(10):
        assert router.client.post("/score", json={"x": 1}, headers=AUTH).status_code == 200
    until(
        lambda: router.metric("mlendpoints_router_collector_dropped_total", reason="write_failed") >= 10,
        within=30,
    )
    assert router.metric("mlendpoints_router_collector_destination_healthy", deployment="blue") == 0
    assert router.client.post("/score", json={"x": 1}, headers=AUTH).status_code == 200
    log = (tmp_path / "router.log").read_text()
    assert KEYS["primaryKey"] not in log and secret not in log


def score(router: Router, n: int) -> None:
    for _ in range(n):
        headers = {**AUTH, "x-trace": "t"}
        assert router.client.post("/score", json={"x": 1}, headers=headers).status_code == 200


def test_gcs_emulator_destination(
    backends: Backends, start_router: Callable[..., Router], tmp_path: Path
) -> None:
    from gcsfs.core import GCSFileSystem

    with gcs_emulator(tmp_path) as url:
        fs = GCSFileSystem(endpoint_url=url, token="anon")
        fs.mkdir("records")
        router = collect_to(backends, start_router, "gs://records/online", {"STORAGE_EMULATOR_HOST": url})
        n = 25
        score(router, n)

        def files() -> dict[str, bytes]:
            fs.invalidate_cache()
            paths = fs.find("records/online")
            return {p.removeprefix("records/online/"): fs.cat_file(p) for p in paths}

        assert_collected(router, n, files)


def test_gcs_emulator_missing_bucket_is_unhealthy_and_live_answers(
    backends: Backends, start_router: Callable[..., Router], tmp_path: Path
) -> None:
    # The emulator checks no credentials: its refusal here is a bucket that does not exist.
    with gcs_emulator(tmp_path) as url:
        router = collect_to(
            backends, start_router, "gs://no-such-bucket/online", {"STORAGE_EMULATOR_HOST": url}
        )
        assert_refused_but_live(router, tmp_path, "no-secret-here")


AZURE_DESTINATION = f"abfss://records@{AZURITE_ACCOUNT}.dfs.core.windows.net/online"


def test_azurite_destination(backends: Backends, start_router: Callable[..., Router], tmp_path: Path) -> None:
    from azure.storage.blob import BlobServiceClient

    with azurite(tmp_path) as endpoint:
        connection = azure_connection_string(endpoint)
        container = BlobServiceClient.from_connection_string(connection).create_container("records")
        env = {"AZURE_STORAGE_CONNECTION_STRING": connection}
        router = collect_to(backends, start_router, AZURE_DESTINATION, env)
        n = 25
        score(router, n)

        def files() -> dict[str, bytes]:
            names = [b.name for b in container.list_blobs(name_starts_with="online/")]
            return {name.removeprefix("online/"): container.download_blob(name).readall() for name in names}

        assert_collected(router, n, files)


def test_azurite_wrong_key_is_unhealthy_and_live_answers(
    backends: Backends, start_router: Callable[..., Router], tmp_path: Path
) -> None:
    from azure.storage.blob import BlobServiceClient

    with azurite(tmp_path) as endpoint:
        BlobServiceClient.from_connection_string(azure_connection_string(endpoint)).create_container(
            "records"
        )
        wrong_key = base64.b64encode(b"not the account key").decode()
        env = {"AZURE_STORAGE_CONNECTION_STRING": azure_connection_string(endpoint, key=wrong_key)}
        router = collect_to(backends, start_router, AZURE_DESTINATION, env)
        assert_refused_but_live(router, tmp_path, wrong_key)
