"""mlendpoints-router in file mode, as a real process, in front of real HTTP backends on loopback."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.servers import free_port, running
from tests.integration.router_support import REPO, ROUTER, Backends, until

KEYS = {"primaryKey": "primary-secret", "secondaryKey": "secondary-secret"}
AUTH = {"authorization": f"Bearer {KEYS['primaryKey']}"}


class RouterProcess:
    def __init__(self, url: str, config_path: Path, log: Path) -> None:
        self.url, self.config_path, self.log = url, config_path, log
        self.client = httpx.Client(base_url=url, timeout=30)

    def write_config(self, config: dict[str, Any]) -> None:
        # Write then rename, as a config renderer should, so the router never reads half a file.
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(config))
        tmp.replace(self.config_path)

    def metric(self, name: str, **labels: str) -> float:
        text = self.client.get("/metrics").text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total


def all_to(deployment: str, *backends: str) -> dict[str, Any]:
    """A router config with one deployment, on these backends, taking all the traffic."""
    return {"deployments": {deployment: {"backends": list(backends)}}, "traffic": {deployment: 100}}


@pytest.fixture
def backends(tmp_path: Path) -> Iterator[Backends]:
    with contextlib.ExitStack() as stack:
        yield Backends(stack, tmp_path)


@pytest.fixture
def start_router(tmp_path: Path) -> Iterator[Callable[..., RouterProcess]]:
    with contextlib.ExitStack() as stack:

        def start(config: dict[str, Any], keys: dict[str, str] | None = None, *args: str) -> RouterProcess:
            config = {"endpoint": "e", "authMode": "none", **config}
            if keys is not None:
                (tmp_path / "keys.json").write_text(json.dumps(keys))
                config = {**config, "authMode": "key", "keysFile": "keys.json"}
            port = free_port()
            path = tmp_path / "router.json"
            path.write_text(json.dumps(config))
            log = tmp_path / "router.log"
            argv = [*ROUTER, "--config", str(path), "--port", str(port), "--host", "127.0.0.1", *args]
            stack.enter_context(running(argv, ready_url=f"http://127.0.0.1:{port}/health", log=log, cwd=REPO))
            router = RouterProcess(f"http://127.0.0.1:{port}", path, log)
            stack.callback(router.client.close)
            return router

        yield start


def served_by(response: httpx.Response) -> str:
    assert response.json()["backend"] == response.headers["x-mlendpoints-served-by"]
    # Azure ML's clients read the deployment from azureml-model-deployment: the same name, once.
    assert response.headers.get_list("azureml-model-deployment") == [
        response.headers["x-mlendpoints-served-by"]
    ]
    return response.headers["x-mlendpoints-served-by"]


def count(backend: str) -> int:
    return int(httpx.get(f"http://{backend}/__count").json()["count"])


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    return error  # type: ignore[no-any-return]


def two_deployments(blue: str, green: str, **route: Any) -> dict[str, Any]:
    return {"blue": {"backends": [blue], **route}, "green": {"backends": [green], **route}}


# --- split, pin, mirror -------------------------------------------------------------
def test_split_follows_weights(backends: Backends, start_router: Callable[..., RouterProcess]) -> None:
    blue, green = backends.start("blue"), backends.start("green")
    router = start_router({"deployments": two_deployments(blue, green), "traffic": {"blue": 70, "green": 30}})
    n = 3000
    shares = Counter(served_by(router.client.post("/score", json={"x": 1})) for _ in range(n))
    # 4 pp is about 5 standard deviations of a 30% share over 3000 draws.
    assert abs(shares["green"] / n - 0.30) < 0.04, shares
    assert shares["blue"] + shares["green"] == n


def test_pin_by_either_header_even_at_weight_zero_and_unknown_is_404(
    backends: Backends, start_router: Callable[..., RouterProcess]
) -> None:
    blue, green, shadow = backends.start("blue"), backends.start("green"), backends.start("shadow")
    deployments = {**two_deployments(blue, green), "shadow": {"backends": [shadow]}}
    router = start_router(
        {"deployments": deployments, "traffic": {"blue": 100, "green": 0}, "mirrorTraffic": {"shadow": 50}}
    )
    for header in ("x-mlendpoints-deployment", "azureml-model-deployment"):
        for _ in range(50):
            assert served_by(router.client.post("/score", headers={header: "green"})) == "green"
    assert count(shadow) == 0, "pinned requests must never be mirrored"
    assert served_by(router.client.get("/", headers={"x-mlendpoints-deployment": "shadow"})) == "shadow"
    error = assert_error(
        router.client.get("/", headers={"azureml-model-deployment": "purple"}), 404, "deployment_not_found"
    )
    assert "purple" in error["message"]


def test_mirror_copies_a_share_and_live_never_waits(
    backends: Backends, start_router: Callable[..., RouterProcess]
) -> None:
    blue, slow_shadow = backends.start("blue"), backends.start("shadow", delay=1.5)
    router = start_router(
        {
            "deployments": {"blue": {"backends": [blue]}, "shadow": {"backends": [slow_shadow]}},
            "traffic": {"blue": 100},
            "mirrorTraffic": {"shadow": 50},
            "mirrorMaxInFlight": 5,
        }
    )
    n, slowest = 400, 0.0
    for _ in range(n):
        started = time.monotonic()
        response = router.client.post("/score", json={"x": 1})
        slowest = max(slowest, time.monotonic() - started)
        assert served_by(response) == "blue"
    assert slowest < 1.0, f"a live request waited {slowest:.2f}s: it must not wait for the 1.5s mirror"
    sent = router.metric("mlendpoints_router_mirror_requests_total", deployment="shadow", outcome="sent")
    dropped = router.metric(
        "mlendpoints_router_mirror_requests_total", deployment="shadow", outcome="dropped"
    )
    # About half were picked for mirroring; the slow shadow holds 5 at a time, the rest are dropped.
    assert abs((sent + dropped) / n - 0.5) < 0.1
    assert 5 <= sent < 40 and dropped > 100
    until(lambda: count(slow_shadow) == sent, within=5)


def test_mirror_failures_are_counted_and_never_reach_live(
    backends: Backends, start_router: Callable[..., RouterProcess]
) -> None:
    blue = backends.start("blue")
    dead = f"127.0.0.1:{free_port()}"
    router = start_router(
        {
            "deployments": {"blue": {"backends": [blue]}, "shadow": {"backends": [dead]}},
            "traffic": {"blue": 100},
            "mirrorTraffic": {"shadow": 50},
        }
    )
    assert all(router.client.get("/score").status_code == 200 for _ in range(100))
    failed = router.metric("mlendpoints_router_mirror_requests_total", deployment="shadow", outcome="failed")
    sent = router.metric("mlendpoints_router_mirror_requests_total", deployment="shadow", outcome="sent")
    dropped = router.metric(
        "mlendpoints_router_mirror_requests_total", deployment="shadow", outcome="dropped"
    )
    # The refused pod is left out for a second, so later copies are dropped (no ready pod) rather than sent.
    assert failed == sent >= 1
    assert sent + dropped > 25


def test_mirror_share_follows_setting(backends: Backends, start_router: Callable[..., RouterProcess]) -> None:
    blue, shadow = backends.start("blue"), backends.start("shadow")
    router = start_router(
        {
            "deployments": {"blue": {"backends": [blue]}, "shadow": {"backends": [shadow]}},
            "traffic": {"blue": 100},
            "mirrorTraffic": {"shadow": 20},
        }
    )
    n = 2000
    for _ in range(n):
        router.client.get("/score")
    until(
        lambda: count(shadow) == router.metric("mlendpoints_router_mirror_requests_total", outcome="sent"), 5
    )
    assert abs(count(shadow) / n - 0.20) < 0.04
    assert router.metric("mlendpoints_router_mirror_requests_total", outcome="dropped") == 0


# --- failures ---------------------------------------------------------------------
def test_refused_connection_is_retried_on_another_pod(
    backends: Backends, start_router: Callable[..., RouterProcess]
) -> None:
    live = backends.start("blue")
    dead = [f"127.0.0.1:{free_port()}" for _ in range(2)]  # two refusals, then the live pod: within 2 retries
    router = start_router(all_to("blue", *dead, live))
    assert all(router.client.get("/score").status_code == 200 for _ in range(30))
    assert router.metric("mlendpoints_router_upstream_retries_total", deployment="blue") >= 1


def test_retries_stop_after_two(start_router: Callable[..., RouterProcess]) -> None:
    dead = [f"127.0.0.1:{free_port()}" for _ in range(5)]
    router = start_router(all_to("blue", *dead))
    assert_error(router.client.get("/score"), 503, "no_ready_pod")
    assert router.metric("mlendpoints_router_upstream_retries_total", deployment="blue") == 2


def test_share_of_deployment_without_ready_pods_is_rerouted(
    backends: Backends, start_router: Callable[..., RouterProcess]
) -> None:
    blue = backends.start("blue")
    router = start_router(
        {
            "deployments": {"blue": {"backends": [blue]}, "green": {"backends": []}},
            "traffic": {"blue": 50, "green": 50},
        }
    )
    responses = [router.client.get("/score") for _ in range(400)]
    assert all(served_by(r) == "blue" for r in responses)
    rerouted = [r for r in responses if r.headers.get("x-mlendpoints-rerouted") == "green"]
    assert 120 < len(rerouted) < 280
    assert router.metric("mlendpoints_router_rerouted_requests_total", deployment="green", to="blue") == len(
        rerouted
    )


def test_no_ready_pod_anywhere_is_503(start_router: Callable[..., RouterProcess]) -> None:
    router = start_router(all_to("blue"))
    assert_error(router.client.post("/score", json={}), 503, "no_ready_pod")


def test_slow_upstream_is_408(backends: Backends, start_router: Callable[..., RouterProcess]) -> None:
    blue = backends.start("blue")
    router = start_router(
        {"deployments": {"blue": {"backends": [blue], "requestTimeoutMs": 300}}, "traffic": {"blue": 100}}
    )
    started = time.monotonic()
    error = assert_error(router.client.get("/score?delay=2"), 408, "request_timeout")
    assert 0.25 < time.monotonic() - started < 1.5
    assert "300 ms" in error["message"]
    assert router.client.get("/score").status_code == 200


def test_upstream_errors_pass_through_with_served_by(
    backends: Backends, start_router: Callable[..., RouterProcess]
) -> None:
    blue = backends.start("blue")
    router = start_router(all_to("blue", blue))
    for status in (400, 500, 503):
        response = router.client.post(f"/score?status={status}", content=b"abc")
        assert response.status_code == status
        assert response.json()["body"] == "abc"  # the backend's own body, unchanged
        assert response.headers["x-backend"] == "blue"
        assert response.headers["x-mlendpoints-served-by"] == "blue"
        assert response.headers["azureml-model-deployment"] == "blue"


def test_azureml_model_errors_are_424_with_the_models_status_in_headers(
    backends: Backends, start_router: Callable[..., RouterProcess]
) -> None:
    blue = backends.start("blue")
    router = start_router({**all_to("blue", blue), "modelErrors": "azureml"})
    for status, reason in (
        (400, "Bad Request"),
        (500, "Internal Server Error"),
        (503, "Service Unavailable"),
    ):
        response = router.client.post(f"/score?status={status}", content=b"abc")
        assert response.status_code == 424 and response.reason_phrase == "Failed Dependency"
        assert response.headers["ms-azureml-model-error-statuscode"] == str(status)
        assert response.headers["ms-azureml-model-error-reason"] == reason
        assert response.json()["body"] == "abc"  # the model's own body, unchanged
        assert response.headers["azureml-model-deployment"] == "blue"
    ok = router.client.post("/score", content=b"abc")
    assert ok.status_code == 200 and "ms-azureml-model-error-statuscode" not in ok.headers
    # The router's own answers keep their status: they are not the model's.
    assert_error(
        router.client.get("/", headers={"azureml-model-deployment": "purple"}), 404, "deployment_not_found"
    )
    assert router.metric("mlendpoints_router_requests_total", deployment="blue", status="424") == 3


# --- limits -------------------------------------------------------------------------
def test_over_concurrency_limit_is_429_at_once(
    backends: Backends, start_router: Callable[..., RouterProcess]
) -> None:
    blue = backends.start("blue")
    router = start_router(
        {
            "deployments": {"blue": {"backends": [blue], "maxConcurrentRequestsPerInstance": 1}},
            "traffic": {"blue": 100},
        }
    )

    def call(path: str) -> tuple[int, float]:
        started = time.monotonic()
        status = httpx.get(router.url + path, timeout=10).status_code
        return status, time.monotonic() - started

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        slow = [pool.submit(call, "/score?delay=1.5") for _ in range(2)]
        time.sleep(0.5)  # both slow requests are in flight: the limit is 2 x 1 x 1 pod = 2
        assert router.metric("mlendpoints_router_in_flight_requests", deployment="blue") == 2
        rejected = [pool.submit(call, "/score") for _ in range(4)]
        results = [f.result() for f in rejected]
    assert all(status == 429 and took < 0.5 for status, took in results), results
    assert [f.result()[0] for f in slow] == [200, 200]
    assert router.client.get("/score").status_code == 200  # capacity is back


def test_body_over_limit_is_413(backends: Backends, start_router: Callable[..., RouterProcess]) -> None:
    blue = backends.start("blue")
    router = start_router(
        {"deployments": {"blue": {"backends": [blue]}}, "traffic": {"blue": 100}, "maxBodyBytes": 1000}
    )
    assert router.client.post("/score", content=b"x" * 1000).status_code == 200
    error = assert_error(router.client.post("/score", content=b"x" * 5000), 413, "payload_too_large")
    assert "maxBodyBytes" in error["message"]

    def chunked() -> Iterator[bytes]:
        for _ in range(20):
            yield b"y" * 100

    assert_error(httpx.post(router.url + "/score", content=chunked()), 413, "payload_too_large")
    assert count(blue) == 1


# --- auth ---------------------------------------------------------------------------
def test_key_auth_primary_or_secondary_and_no_hint(
    backends: Backends, start_router: Callable[..., RouterProcess]
) -> None:
    blue = backends.start("blue")
    router = start_router(all_to("blue", blue), keys=KEYS)
    for key in KEYS.values():
        response = router.client.get("/score", headers={"authorization": f"Bearer {key}"})
        assert response.status_code == 200
        assert "authorization" not in response.json()["headers"], "the key is not forwarded to the model"
    failures = [
        router.client.get("/score"),
        router.client.get("/score", headers={"authorization": "Bearer wrong"}),
        router.client.get("/score", headers={"authorization": f"Basic {KEYS['primaryKey']}"}),
    ]
    bodies = {assert_error(r, 401, "unauthorized")["message"] for r in failures}
    assert len(bodies) == 1, "the answer must not say which part was wrong"
    assert count(blue) == 2


def test_keys_are_reread_when_the_file_changes(
    backends: Backends, start_router: Callable[..., RouterProcess], tmp_path: Path
) -> None:
    blue = backends.start("blue")
    router = start_router(all_to("blue", blue), keys=KEYS)
    new = {"primaryKey": "rotated", "secondaryKey": KEYS["secondaryKey"]}
    (tmp_path / "keys.tmp").write_text(json.dumps(new))
    (tmp_path / "keys.tmp").replace(tmp_path / "keys.json")
    took = until(
        lambda: router.client.get("/score", headers={"authorization": "Bearer rotated"}).status_code == 200, 2
    )
    assert took < 1.0
    assert router.client.get("/score", headers=AUTH).status_code == 401


def test_none_mode_allows_all(backends: Backends, start_router: Callable[..., RouterProcess]) -> None:
    blue = backends.start("blue")
    router = start_router(
        {"deployments": {"blue": {"backends": [blue]}}, "traffic": {"blue": 100}, "authMode": "none"}
    )
    assert router.client.get("/score").status_code == 200
    assert router.client.get("/score", headers={"authorization": "Bearer anything"}).status_code == 200


# --- request id, access log, metrics, health ---------------------------------------------
def test_request_id_kept_or_generated_passed_upstream_and_returned(
    backends: Backends, start_router: Callable[..., RouterProcess]
) -> None:
    blue = backends.start("blue")
    router = start_router(
        {"deployments": {"blue": {"backends": [blue]}}, "traffic": {"blue": 100}, "accessLog": True}
    )
    kept = router.client.get("/score", headers={"x-request-id": "abc-123"})
    assert kept.headers["x-request-id"] == "abc-123"
    assert kept.json()["headers"]["x-request-id"] == "abc-123"
    generated = router.client.get("/score")
    rid = generated.headers["x-request-id"]
    assert len(rid) == 32 and generated.json()["headers"]["x-request-id"] == rid
    assert router.client.get("/score").headers["x-request-id"] != rid
    rejected = router.client.get("/", headers={"x-mlendpoints-deployment": "nope", "x-request-id": "r-404"})
    assert rejected.headers["x-request-id"] == "r-404"

    def logged() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in router.log.read_text().splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("logger") == "mlendpoints.router.access"]

    until(lambda: len(logged()) >= 4, within=2)
    entries = {e["request_id"]: e for e in logged()}
    assert entries["abc-123"]["status"] == 200 and entries["abc-123"]["deployment"] == "blue"
    assert entries[rid]["path"] == "/score" and entries[rid]["duration_ms"] >= 0
    assert entries["r-404"]["status"] == 404


def test_metrics_per_deployment(backends: Backends, start_router: Callable[..., RouterProcess]) -> None:
    blue, green = backends.start("blue"), backends.start("green")
    router = start_router({"deployments": two_deployments(blue, green), "traffic": {"blue": 50, "green": 50}})
    for _ in range(20):
        router.client.get("/score")
    router.client.get("/score?status=500", headers={"x-mlendpoints-deployment": "green"})
    ok = router.metric("mlendpoints_router_requests_total", status="200")
    assert ok == 20
    assert router.metric("mlendpoints_router_requests_total", deployment="green", status="500") == 1
    assert router.metric("mlendpoints_router_request_duration_seconds_count") == 21
    assert router.metric("mlendpoints_router_in_flight_requests", deployment="blue") == 0
    assert router.metric("mlendpoints_router_ready_pods", deployment="green") == 1


def test_health_is_the_routers_own(start_router: Callable[..., RouterProcess]) -> None:
    router = start_router(all_to("blue"))
    assert router.client.get("/health").json() == {"status": "ok"}


# --- config changes -------------------------------------------------------------------
def test_traffic_change_applies_within_a_second_without_dropping_requests(
    backends: Backends, start_router: Callable[..., RouterProcess]
) -> None:
    blue, green = backends.start("blue"), backends.start("green")
    deployments = two_deployments(blue, green)
    router = start_router({"deployments": deployments, "traffic": {"blue": 100, "green": 0}})
    statuses: Counter[int] = Counter()
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=router.url) as client:
            while not stop.is_set():
                statuses[client.get("/score").status_code] += 1

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for target in ("green", "blue", "green"):
            router.write_config(
                {"endpoint": "e", "authMode": "none", "deployments": deployments, "traffic": {target: 100}}
            )
            took = until(lambda t=target: served_by(router.client.get("/score")) == t, within=2)  # type: ignore[misc]
            assert took < 1.0
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert set(statuses) == {200}, statuses
    assert statuses[200] > 50


def test_invalid_config_change_keeps_the_previous_one(
    backends: Backends, start_router: Callable[..., RouterProcess]
) -> None:
    blue = backends.start("blue")
    router = start_router(all_to("blue", blue))
    router.write_config(
        {"endpoint": "e", "deployments": {"blue": {"backends": [blue]}}, "traffic": {"blue": 90}}
    )
    until(lambda: "sum to 0 or 100" in router.log.read_text(), within=2)
    assert router.client.get("/score").status_code == 200


# --- HTTP/1.1 on the client side: slow senders, pipelining, HEAD, Expect ------------------------
def connect(router: RouterProcess) -> socket.socket:
    host, port = router.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_response(sock: socket.socket, buffer: bytearray) -> tuple[int, dict[str, str], bytes]:
    """One response off the connection (Content-Length framed); what follows stays in `buffer`."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-response: {bytes(buffer)!r}"
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        rest += chunk
    buffer[:] = rest[length:]
    return int(status_line.split()[1]), headers, rest[:length]


def test_a_request_not_received_whole_in_time_is_408_and_closed(
    backends: Backends, start_router: Callable[..., RouterProcess]
) -> None:
    blue = backends.start("blue")
    config = all_to("blue", blue)
    router = start_router(config, None, "--request-read-timeout-s", "0.5")
    with connect(router) as slow:
        slow.sendall(b"POST /score HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n12345")
        started = time.monotonic()
        status, _, body = read_response(slow, bytearray())
        assert status == 408 and json.loads(body)["error"]["code"] == "request_timeout"
        assert 0.4 <= time.monotonic() - started < 5
        assert slow.recv(1024) == b""  # closed: the slow sender holds nothing
    with connect(router) as patient:  # slower than one read, faster than the timeout: served
        buffer = bytearray()
        for part in (b"POST /score HTTP/1.1\r\nhost: x\r\n", b"content-length: 2\r\n\r\n", b"ok"):
            patient.sendall(part)
            time.sleep(0.1)
        status, _, body = read_response(patient, buffer)
        assert status == 200 and json.loads(body)["body"] == "ok"
        time.sleep(0.6)  # past the timeout while idle between requests: keep-alive, not a 408
        patient.sendall(b"GET /again HTTP/1.1\r\nhost: x\r\n\r\n")
        assert read_response(patient, buffer)[0] == 200
    assert count(blue) == 2


def test_pipelined_requests_are_answered_in_order(
    backends: Backends, start_router: Callable[..., RouterProcess]
) -> None:
    blue = backends.start("blue")
    router = start_router(all_to("blue", blue))
    paths = [f"/p{i}" for i in range(5)]
    with connect(router) as sock:
        sock.sendall(
            b"".join(
                f"GET {p}?delay={0.05 * (5 - i)} HTTP/1.1\r\nhost: x\r\n\r\n".encode()
                for i, p in enumerate(paths)
            )
        )
        buffer = bytearray()
        answered = [json.loads(read_response(sock, buffer)[2])["path"] for _ in paths]
    assert answered == paths


def test_head_is_forwarded_and_answered_without_a_body(
    backends: Backends, start_router: Callable[..., RouterProcess]
) -> None:
    blue = backends.start("blue")
    router = start_router(all_to("blue", blue))
    response = router.client.head("/score")
    assert response.status_code == 200 and response.content == b""
    assert int(response.headers["content-length"]) > 0  # the length a GET would have
    assert response.headers["x-mlendpoints-served-by"] == "blue"
    assert router.client.get("/score").json()["method"] == "GET"  # the connection is still in step
    assert count(blue) == 2


def test_expect_100_continue_gets_the_interim_response_first(
    backends: Backends, start_router: Callable[..., RouterProcess]
) -> None:
    blue = backends.start("blue")
    router = start_router(all_to("blue", blue))
    with connect(router) as sock:
        sock.sendall(b"POST /score HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n")
        buffer = bytearray()
        assert read_response(sock, buffer)[0] == 100
        sock.sendall(b"hello")
        status, _, body = read_response(sock, buffer)
    assert status == 200 and json.loads(body)["body"] == "hello"
    assert "expect" not in json.loads(body)["headers"]  # answered here, not passed on
