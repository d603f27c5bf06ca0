"""The router as activator (issue 16), as a real process in file mode in front of real backends: requests
held for a deployment with no ready pod or no free slot (maxQueueWaitMs), FIFO, bounded, timing out to
503 with Retry-After; mirrors never held; the scaling report on GET /-/scaling."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlendpoints_serving.contract import RETRY_AFTER_STARTING_S, ROUTER_SCALING_PATH, ScalingReport
from tests.fixtures.servers import free_port, running
from tests.integration.router_support import REPO, ROUTER, Backends, until
from tests.integration.test_router import KEYS, RouterProcess, assert_error, count

PIN = "x-mlendpoints-deployment"


@pytest.fixture
def backends(tmp_path: Path) -> Iterator[Backends]:
    with contextlib.ExitStack() as stack:
        yield Backends(stack, tmp_path)


@pytest.fixture
def start_router(tmp_path: Path) -> Iterator[Callable[..., RouterProcess]]:
    with contextlib.ExitStack() as stack:

        def start(config: dict[str, Any], keys: dict[str, str] | None = None) -> RouterProcess:
            config = {"endpoint": "e", "authMode": "none", **config}
            if keys is not None:
                (tmp_path / "keys.json").write_text(json.dumps(keys))
                config = {**config, "authMode": "key", "keysFile": "keys.json"}
            port = free_port()
            path = tmp_path / "router.json"
            path.write_text(json.dumps(config))
            log = tmp_path / "router.log"
            argv = [*ROUTER, "--config", str(path), "--port", str(port), "--host", "127.0.0.1"]
            stack.enter_context(running(argv, ready_url=f"http://127.0.0.1:{port}/health", log=log, cwd=REPO))
            router = RouterProcess(f"http://127.0.0.1:{port}", path, log)
            stack.callback(router.client.close)
            return router

        yield start


def report(router: RouterProcess) -> ScalingReport:
    response = httpx.get(router.url + ROUTER_SCALING_PATH, timeout=5)  # no key: unauthenticated
    assert response.status_code == 200, response.text
    return ScalingReport.model_validate_json(response.content)


def timed(router: RouterProcess, path: str = "/score", **kwargs: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = httpx.post(router.url + path, timeout=30, **kwargs)
    return response, time.monotonic() - started


def test_held_request_is_served_when_a_backend_appears(
    backends: Backends, start_router: Callable[..., RouterProcess]
) -> None:
    route = {"backends": [], "maxQueueWaitMs": 15000, "autoscaled": True}
    config = {"endpoint": "e", "authMode": "none", "deployments": {"blue": route}, "traffic": {"blue": 100}}
    router = start_router(config)
    blue = backends.start("blue")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        held = pool.submit(timed, router, json={"x": 1})
        until(lambda: report(router).deployments["blue"].queued == 1, within=5)
        assert router.metric("mlendpoints_router_queued_requests", deployment="blue") == 1
        time.sleep(0.3)  # held for at least this long
        assert not held.done()
        woke = time.monotonic()
        router.write_config({**config, "deployments": {"blue": {**route, "backends": [blue]}}})
        response, _ = held.result(timeout=10)
    assert response.status_code == 200 and response.headers["x-mlendpoints-served-by"] == "blue"
    assert time.monotonic() - woke < 2, "the config file is polled every 0.2 s; the held request goes at once"
    load = report(router).deployments["blue"]
    assert (load.queued, load.inFlight, load.requests) == (0, 0, 1)
    assert load.concurrencySeconds >= 0.3  # held, then in flight: one request all along


def test_held_request_times_out_to_503_with_retry_after(
    backends: Backends, start_router: Callable[..., RouterProcess]
) -> None:
    blue = backends.start("blue")
    router = start_router(
        {
            "deployments": {
                "zero": {"backends": [], "maxQueueWaitMs": 300},
                "busy": {"backends": [blue], "maxQueueWaitMs": 300, "maxConcurrentRequestsPerInstance": 1},
            },
            "traffic": {"zero": 100},
        }
    )
    for headers in ({}, {PIN: "zero"}):  # live pick and pinned
        response, took = timed(router, headers=headers)
        error = assert_error(response, 503, "deployment_starting")
        assert "starting" in error["message"] and response.headers["retry-after"] == str(
            RETRY_AFTER_STARTING_S
        )
        assert response.headers["x-mlendpoints-served-by"] == "zero"
        assert 0.25 < took < 2, took
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        slow = [pool.submit(timed, router, "/score?delay=1.5", headers={PIN: "busy"}) for _ in range(2)]
        until(lambda: report(router).deployments["busy"].inFlight == 2, within=5)
        response, took = timed(router, headers={PIN: "busy"})
        assert [f.result()[0].status_code for f in slow] == [200, 200]
    assert_error(response, 503, "queue_timeout")
    assert response.headers["retry-after"] == "1" and 0.25 < took < 1.4, took


def test_busy_deployment_holds_instead_of_429_when_it_may(
    backends: Backends, start_router: Callable[..., RouterProcess]
) -> None:
    blue = backends.start("blue")
    route = {"backends": [blue], "maxConcurrentRequestsPerInstance": 1}
    router = start_router(
        {
            "deployments": {"holds": {**route, "maxQueueWaitMs": 5000}, "rejects": route},
            "traffic": {"holds": 100},
        }
    )
    for name, expected in (("holds", 200), ("rejects", 429)):
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            slow = [pool.submit(timed, router, "/score?delay=1.0", headers={PIN: name}) for _ in range(2)]
            time.sleep(0.4)  # both in flight: the limit is 2 x 1 x 1 pod = 2
            response, took = timed(router, headers={PIN: name})
            assert [f.result()[0].status_code for f in slow] == [200, 200]
        assert response.status_code == expected, response.text
        if name == "holds":
            assert 0.4 < took < 2.5, took  # it went out when a slow one finished
        else:
            assert took < 0.4


def test_queue_bound_is_503_at_once(start_router: Callable[..., RouterProcess]) -> None:
    router = start_router(
        {
            "deployments": {"blue": {"backends": [], "maxQueueWaitMs": 3000, "maxQueuedRequests": 2}},
            "traffic": {"blue": 100},
        }
    )
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        held = [pool.submit(timed, router) for _ in range(2)]
        until(lambda: report(router).deployments["blue"].queued == 2, within=5)
        response, took = timed(router)
        assert_error(response, 503, "queue_full")
        assert response.headers["retry-after"] == str(RETRY_AFTER_STARTING_S) and took < 0.5
        assert [f.result()[0].status_code for f in held] == [503, 503]


def test_held_requests_go_out_first_in_first_out(
    backends: Backends, start_router: Callable[..., RouterProcess]
) -> None:
    route = {"backends": [], "maxQueueWaitMs": 15000, "maxConcurrentRequestsPerInstance": 1}
    config = {"endpoint": "e", "authMode": "none", "deployments": {"blue": route}, "traffic": {"blue": 100}}
    router = start_router(config)
    blue = backends.start("blue")
    n = 5
    with concurrent.futures.ThreadPoolExecutor(n) as pool:

        def call(i: int) -> tuple[int, httpx.Response, float]:
            return i, timed(router, "/score?delay=0.4")[0], time.monotonic()

        def queued(expected: int) -> bool:
            return report(router).deployments["blue"].queued == expected

        futures = []
        for i in range(n):
            futures.append(pool.submit(call, i))
            until(lambda: queued(i + 1), within=5)  # noqa: B023 (called at once)
        router.write_config({**config, "deployments": {"blue": {**route, "backends": [blue]}}})
        results = [f.result(timeout=20) for f in futures]
    assert all(r.status_code == 200 for _, r, _ in results)
    done = {i: at for i, _, at in results}
    # Limit 2 x 1 x 1 pod = 2: the oldest two go first, then the next two, then the last.
    assert max(done[0], done[1]) < min(done[2], done[3]) and max(done[2], done[3]) < done[4], done


def test_mirror_to_a_deployment_without_pods_is_dropped_and_never_wakes_it(
    backends: Backends, start_router: Callable[..., RouterProcess]
) -> None:
    blue = backends.start("blue")
    router = start_router(
        {
            "deployments": {
                "blue": {"backends": [blue]},
                "shadow": {"backends": [], "maxQueueWaitMs": 5000, "autoscaled": True},
            },
            "traffic": {"blue": 100},
            "mirrorTraffic": {"shadow": 50},
        }
    )
    for _ in range(100):
        response, took = timed(router)
        assert response.status_code == 200 and took < 1
    dropped = router.metric(
        "mlendpoints_router_mirror_requests_total", deployment="shadow", outcome="dropped"
    )
    assert 25 <= dropped <= 75, dropped
    load = report(router).deployments["shadow"]
    assert (load.requests, load.queued, load.inFlight, load.concurrencySeconds) == (0, 0, 0, 0.0)


def test_scaling_report_counts_arrivals_and_integrates_concurrency(
    backends: Backends, start_router: Callable[..., RouterProcess]
) -> None:
    blue, green = backends.start("blue"), backends.start("green")
    router = start_router(
        {
            "deployments": {
                "blue": {"backends": [blue], "autoscaled": True},
                "green": {"backends": [green]},
            },
            "traffic": {"blue": 100},
        },
        keys=KEYS,
    )
    auth = {"authorization": f"Bearer {KEYS['primaryKey']}"}
    before = report(router)
    assert len(before.instance) == 16 and int(before.instance, 16) >= 0
    assert set(before.deployments) == {"blue", "green"}
    concurrency, delay = 4, 1.0
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        calls = [
            pool.submit(timed, router, f"/score?delay={delay}", headers=auth) for _ in range(concurrency)
        ]
        until(lambda: report(router).deployments["blue"].inFlight == concurrency, within=5)
        assert all(f.result()[0].status_code == 200 for f in calls)
    after = report(router)
    assert after.instance == before.instance
    blue_after, blue_before = after.deployments["blue"], before.deployments["blue"]
    assert blue_after.requests - blue_before.requests == concurrency
    integral = blue_after.concurrencySeconds - blue_before.concurrencySeconds
    assert concurrency * delay * 0.95 < integral < concurrency * delay * 1.4, integral
    assert router.client.post("/score", headers={**auth, PIN: "green"}).status_code == 200
    green_load = report(router).deployments["green"]  # not autoscaled: listed, counters left at 0
    assert (green_load.inFlight, green_load.requests, green_load.concurrencySeconds) == (0, 0, 0.0)
    assert router.client.post("/score").status_code == 401  # the report needs no key, scoring does


def test_split_keeps_the_share_of_a_holding_deployment_with_no_pod(
    backends: Backends, start_router: Callable[..., RouterProcess]
) -> None:
    blue = backends.start("blue")
    router = start_router(
        {
            "deployments": {
                "blue": {"backends": [blue]},
                "zero": {"backends": [], "maxQueueWaitMs": 50, "autoscaled": True},
            },
            "traffic": {"blue": 50, "zero": 50},
        }
    )
    n = 60
    served: Counter[str] = Counter()
    for _ in range(n):
        response, _ = timed(router)
        assert "x-mlendpoints-rerouted" not in response.headers
        name = response.headers["x-mlendpoints-served-by"]
        served[name] += 1
        if name == "zero":
            assert_error(response, 503, "deployment_starting")
        else:
            assert response.status_code == 200
    assert served["zero"] >= 10 and served["blue"] >= 10, served  # 50/50 over 60: about 30 each
    assert report(router).deployments["zero"].requests == served["zero"]
    assert count(blue) == served["blue"]
