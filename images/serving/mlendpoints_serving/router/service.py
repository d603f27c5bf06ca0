"""One request, from decision to response: auth, pin or split, limits, mirror, retries, timeout, metrics.

Transport-free: the proxy hands in a parsed `Request` and writes back the `Response`.
"""

from __future__ import annotations

import asyncio
import http
import logging
import os
import random
import time

import orjson

from mlendpoints_serving.contract import (
    HEADER_DEPLOYMENT,
    HEADER_DEPLOYMENT_AZURE,
    HEADER_MODEL_ERROR_REASON,
    HEADER_MODEL_ERROR_STATUS,
    HEADER_REQUEST_ID,
    HEADER_REROUTED,
    HEADER_SERVED_BY,
    HEADER_SERVED_BY_AZURE,
    REASON_TOKEN_FORBIDDEN,
    REASON_TOKEN_INVALID,
    REASON_TOKEN_MISSING,
    REASON_TOKEN_REVIEW_UNAVAILABLE,
    RETRY_AFTER_STARTING_S,
    ROUTER_SCALING_PATH,
    STATUS_MODEL_ERROR,
    ScalingReport,
)
from mlendpoints_serving.router.auth import KeyChecker
from mlendpoints_serving.router.collector import Collector, ShadowPair, sampled
from mlendpoints_serving.router.metrics import NO_DEPLOYMENT, RouterMetrics
from mlendpoints_serving.router.routing import (
    EJECT_SECONDS,
    Pod,
    concurrency_limit,
    pick_pod,
    resolve_pin,
    should_mirror,
)
from mlendpoints_serving.router.state import Deployment, RoutingState
from mlendpoints_serving.router.tokenauth import Outcome, TokenChecker
from mlendpoints_serving.router.upstream import (
    ConnectFailed,
    Headers,
    UpstreamError,
    UpstreamPool,
    UpstreamResponse,
)

MAX_RETRIES = 2
access_log = logging.getLogger("mlendpoints.router.access")
log = logging.getLogger("mlendpoints.router")

_REQUEST_ID = HEADER_REQUEST_ID.encode()
_SERVED_BY = HEADER_SERVED_BY.encode()
_SERVED_BY_AZURE = HEADER_SERVED_BY_AZURE.encode()
_MODEL_ERROR_STATUS = HEADER_MODEL_ERROR_STATUS.encode()
_MODEL_ERROR_REASON = HEADER_MODEL_ERROR_REASON.encode()
_REROUTED = HEADER_REROUTED.encode()
_JSON = (b"content-type", b"application/json")
_RETRY_AFTER = b"retry-after"
_SCALING = ROUTER_SCALING_PATH.encode()
_OWN_PATHS = (b"/health", b"/metrics", _SCALING)


class Request:
    """A fully read downstream request. `headers` are the ones to forward (hop-by-hop and auth removed)."""

    __slots__ = ("authorization", "body", "headers", "keep_alive", "method", "pin", "request_id", "target")

    def __init__(
        self,
        method: bytes,
        target: bytes,
        headers: Headers,
        body: bytes,
        request_id: bytes | None = None,
        authorization: bytes | None = None,
        pin: bytes | None = None,
        keep_alive: bool = True,
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.request_id = request_id
        self.authorization = authorization
        self.pin = pin
        self.keep_alive = keep_alive


class Response:
    __slots__ = ("body", "headers", "reason", "status")

    def __init__(self, status: int, headers: Headers, body: bytes, reason: bytes | None = None) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.reason = reason if reason is not None else _reason(status)


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _azure_model_error(upstream: UpstreamResponse) -> Response:
    """Azure ML's answer to a model server's error: 424, with the model's status and reason in headers."""
    headers = [
        *upstream.headers,
        (_MODEL_ERROR_STATUS, str(upstream.status).encode()),
        (_MODEL_ERROR_REASON, upstream.reason or _reason(upstream.status)),
    ]
    return Response(STATUS_MODEL_ERROR, headers, upstream.body)


def error_response(status: int, code: str, message: str, request_id: bytes | None = None) -> Response:
    headers = [_JSON]
    if request_id:
        headers.append((_REQUEST_ID, request_id))
    return Response(status, headers, orjson.dumps({"error": {"code": code, "message": message}}))


def new_request_id() -> bytes:
    """128 random bits as 32 hex digits (unique, not secret: no need for os.urandom's system call)."""
    return b"%032x" % random.getrandbits(128)


class Router:
    def __init__(
        self,
        state: RoutingState,
        keys: KeyChecker,
        pool: UpstreamPool,
        metrics: RouterMetrics,
        rand: random.Random | None = None,
        collector: Collector | None = None,
        tokens: TokenChecker | None = None,
    ) -> None:
        self.state = state
        self.keys = keys
        # Token auth; without a Kubernetes API (file mode) every token-mode request gets 503.
        self.tokens = tokens if tokens is not None else TokenChecker(None)
        self.pool = pool
        self.metrics = metrics
        self.collector = collector or Collector(
            metrics, lambda: state.config.collectorQueueRecords, lambda: state.config.collectorFlushSeconds
        )
        self._rand = (rand or random.Random()).random
        self._mirror_in_flight = 0
        self._mirror_tasks: set[asyncio.Task[None]] = set()
        # Names this process in its scaling reports: their counters restart with it.
        self.instance = os.urandom(8).hex()

    # --- the router's own endpoints -------------------------------------------
    def health(self) -> Response:
        if self.state.config.authMode == "key" and not self.keys.loaded:
            return error_response(503, "keys_not_loaded", "key auth is on but no key has been loaded yet")
        return Response(200, [_JSON], b'{"status":"ok"}')

    def scaling_report(self) -> Response:
        now = time.monotonic()
        report = ScalingReport(
            instance=self.instance,
            deployments={name: d.load(now) for name, d in self.state.deployments.items()},
        )
        return Response(200, [_JSON], report.model_dump_json().encode())

    def render_metrics(self) -> Response:
        self.metrics.sync_gauges(self.state.deployments.values(), time.monotonic())
        return Response(200, [(b"content-type", self.metrics.content_type.encode())], self.metrics.render())

    # --- scoring requests --------------------------------------------------------
    async def handle(self, request: Request) -> Response:
        if request.method == b"GET" and request.target in _OWN_PATHS:
            if request.target == b"/health":
                return self.health()
            return self.render_metrics() if request.target == b"/metrics" else self.scaling_report()
        started = time.perf_counter()
        request_id = request.request_id or new_request_id()
        deployment, rerouted_from, response, pair = await self._route(request, request_id)
        label = deployment.name if deployment else NO_DEPLOYMENT
        response.headers.append((_REQUEST_ID, request_id))
        if deployment is not None:
            name = deployment.name.encode()
            response.headers.append((_SERVED_BY, name))
            response.headers.append((_SERVED_BY_AZURE, name))
        if rerouted_from is not None:
            response.headers.append((_REROUTED, rerouted_from.encode()))
        elapsed = time.perf_counter() - started
        self.metrics.observe(label, response.status, elapsed)
        if deployment is not None:
            route = deployment.route
            collect = route.collector
            if collect is not None and sampled(collect, request_id):
                self.collector.offer(
                    (
                        collect, self.state.config.endpoint, deployment.name, route.modelVersion, "live",
                        request_id, time.time() - elapsed, elapsed, response.status, request.body,
                        request.headers if collect.headers else None, response.body,
                    )
                )  # fmt: skip
        if pair is not None:
            pair.set_live(response.status, response.body, elapsed)
        if self.state.config.accessLog:
            self._log_access(request, request_id, response.status, label, rerouted_from, elapsed)
        return response

    def _collect(
        self,
        deployment: Deployment,
        role: str,
        request: Request,
        request_id: bytes,
        elapsed: float,
        status: int,
        body: bytes,
    ) -> None:
        route = deployment.route
        assert route.collector is not None
        self.collector.offer(
            (
                route.collector,
                self.state.config.endpoint,
                deployment.name,
                route.modelVersion,
                role,
                request_id,
                time.time() - elapsed,
                elapsed,
                status,
                request.body,
                # Only when kept: a queued header list would outlive the request into the old GC
                # generations, which the collections it brings on then scan at length.
                request.headers if route.collector.headers else None,
                body,
            )
        )

    async def _route(
        self, request: Request, request_id: bytes
    ) -> tuple[Deployment | None, str | None, Response, ShadowPair | None]:
        state = self.state
        mode = state.config.authMode
        if mode == "key" and not self.keys.check(request.authorization):
            message = "missing or invalid key; send 'Authorization: Bearer <key>'"
            return None, None, error_response(401, "unauthorized", message), None
        if mode == "token":
            refused = await self._check_token(request)
            if refused is not None:
                return None, None, refused, None
        now = time.monotonic()
        rerouted_from = None
        if request.pin is not None:
            pinned = request.pin.decode("latin-1")
            name = resolve_pin(pinned, state.deployments)
            if name is None:
                message = (
                    f"deployment {pinned.strip()!r} (from {HEADER_DEPLOYMENT} or {HEADER_DEPLOYMENT_AZURE}) "
                    f"does not exist; known: {sorted(state.deployments)}"
                )
                return None, None, error_response(404, "deployment_not_found", message), None
            deployment = state.deployments[name]
            ready = deployment.ready_pods(now)
            if not ready and deployment.hold_s is None:
                return (
                    None,
                    None,
                    error_response(503, "no_ready_pod", f"deployment {name!r} has no ready pod"),
                    None,
                )
        else:
            pick = state.split.pick(self._rand, lambda n: state.deployments[n].takes_traffic(now))
            if pick is None:
                message = "no deployment with traffic has a ready pod"
                return None, None, error_response(503, "no_ready_pod", message), None
            deployment = state.deployments[pick.deployment]
            ready = deployment.ready_pods(now)
            if pick.rerouted_from is not None:
                rerouted_from = pick.rerouted_from
                self.metrics.rerouted.labels(rerouted_from, deployment.name).inc()
        route = deployment.route
        limit = concurrency_limit(route.maxConcurrentRequestsPerInstance, len(ready))
        tracked = deployment.tracked
        if tracked:
            deployment.requests += 1
        if deployment.in_flight >= limit or deployment.queue:
            if deployment.hold_s is None:
                message = (
                    f"deployment {deployment.name!r} has {limit} requests in flight, its limit; retry later"
                )
                return deployment, rerouted_from, error_response(429, "too_many_requests", message), None
            # Held until a slot is free: the slot comes reserved (in_flight counts it already), and
            # requestTimeoutMs starts now, when the request goes to a pod.
            refused = await self._hold(deployment, deployment.hold_s)
            if refused is not None:
                return deployment, rerouted_from, refused, None
            now = time.monotonic()
            ready = deployment.ready_pods(now)
            if not ready:  # its pods went away between the wake-up and now
                deployment.finish()
                return deployment, rerouted_from, _refused(deployment, "queue_timeout", "no pod"), None
        elif tracked:
            deployment.start(now)
        else:
            deployment.in_flight += 1

        pair = None
        try:
            data = _upstream_request(request, request_id)
            head = request.method == b"HEAD"
            if state.mirror is not None and request.pin is None:
                mirror, share = state.mirror
                if should_mirror(share, False, self._rand):
                    pair = self._send_mirror(mirror, data, head, now, request, request_id, deployment.name)
            # time.monotonic() is the event loop's clock (asyncio's and, to the millisecond, uvloop's)
            upstream = await self._forward(deployment, ready, data, head, now + deployment.timeout_s)
        except TimeoutError:
            message = f"deployment {deployment.name!r} did not answer within {route.requestTimeoutMs} ms"
            return deployment, rerouted_from, error_response(408, "request_timeout", message), pair
        except UpstreamError as exc:
            status, code = (503, "no_ready_pod") if exc.retryable else (502, "bad_gateway")
            return (
                deployment,
                rerouted_from,
                error_response(status, code, f"deployment {deployment.name!r}: {exc}"),
                pair,
            )
        finally:
            if deployment.tracked:
                deployment.finish()
            else:
                deployment.in_flight -= 1
        if upstream.status >= 400 and state.config.modelErrors == "azureml":
            return deployment, rerouted_from, _azure_model_error(upstream), pair
        return (
            deployment,
            rerouted_from,
            Response(upstream.status, upstream.headers, upstream.body, upstream.reason),
            pair,
        )

    async def _check_token(self, request: Request) -> Response | None:
        """None when the bearer token may score this endpoint, else the 401, 403 or 503 to answer."""
        config = self.state.config
        verdict = await self.tokens.check(
            request.authorization, config.namespace or self.tokens.namespace, config.endpoint
        )
        outcome = verdict.outcome
        if outcome is Outcome.ALLOWED:
            return None
        if outcome is Outcome.FORBIDDEN:
            return error_response(403, REASON_TOKEN_FORBIDDEN, verdict.message)
        if outcome is Outcome.UNAVAILABLE:
            response = error_response(503, REASON_TOKEN_REVIEW_UNAVAILABLE, verdict.message)
            response.headers.append((_RETRY_AFTER, b"1"))
            return response
        code = REASON_TOKEN_MISSING if outcome is Outcome.MISSING else REASON_TOKEN_INVALID
        response = error_response(401, code, verdict.message)
        response.headers.append((b"www-authenticate", b"Bearer"))
        return response

    async def _hold(self, deployment: Deployment, wait_s: float) -> Response | None:
        """Wait for a free slot, FIFO: None once admitted (the slot already counted in in_flight),
        else the 503 to answer (queue full, or the wait is over)."""
        if len(deployment.queue) >= deployment.route.maxQueuedRequests:
            message = f"it already holds {len(deployment.queue)} requests (maxQueuedRequests)"
            return _refused(deployment, "queue_full", message)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        deployment.hold(waiter)
        timer = loop.call_later(wait_s, _expire, deployment, waiter)
        try:
            admitted = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                deployment.finish()  # admitted, then cancelled: give the slot back
            else:
                deployment.leave(waiter)
            raise
        finally:
            timer.cancel()
        if admitted:
            return None
        message = f"no free slot within maxQueueWaitMs ({deployment.route.maxQueueWaitMs} ms)"
        return _refused(deployment, "queue_timeout", message)

    async def _forward(
        self, deployment: Deployment, ready: list[Pod], data: bytes, head: bool, deadline: float
    ) -> UpstreamResponse:
        """Send to a pod picked by p2c; on a refused connect (or an idle connection the pod had
        closed) send again, at most MAX_RETRIES times, to another pod when there is one."""
        refused: list[Pod] = []
        pod = pick_pod(ready, self._rand)
        attempt = 0
        while True:
            assert pod is not None
            pod.outstanding += 1
            try:
                return await self.pool.exchange(pod.address, data, head, deadline)
            except UpstreamError as exc:
                if isinstance(exc, ConnectFailed):
                    pod.ejected_until = time.monotonic() + EJECT_SECONDS
                    refused.append(pod)
                if not exc.retryable or attempt == MAX_RETRIES:
                    raise
                next_pod = pick_pod(ready, self._rand, exclude=refused)
                if next_pod is None:
                    raise
            finally:
                pod.outstanding -= 1
            attempt += 1
            pod = next_pod
            self.metrics.retries.labels(deployment.name).inc()

    # --- mirror -------------------------------------------------------------------
    def _send_mirror(
        self,
        deployment: Deployment,
        data: bytes,
        head: bool,
        now: float,
        request: Request,
        request_id: bytes,
        live_name: str,
    ) -> ShadowPair | None:
        """Fire and forget: the live response never waits for this. The pair (live and mirror
        answers) goes to the shadow comparison once both are in."""
        ready = deployment.ready_pods(now)
        limit = concurrency_limit(deployment.route.maxConcurrentRequestsPerInstance, len(ready))
        if (
            not ready
            or self._mirror_in_flight >= self.state.config.mirrorMaxInFlight
            or deployment.in_flight >= limit
            or deployment.queue  # never held: copies wait for nothing and wake nothing
        ):
            self.metrics.mirror.labels(deployment.name, "dropped").inc()
            return None
        self.metrics.mirror.labels(deployment.name, "sent").inc()
        deadline = now + deployment.timeout_s
        pair = ShadowPair(self.collector, live_name, deployment.name)
        task = asyncio.get_running_loop().create_task(
            self._mirror(deployment, ready, data, head, deadline, request, request_id, pair)
        )
        self._mirror_tasks.add(task)
        task.add_done_callback(self._mirror_tasks.discard)
        return pair

    async def _mirror(
        self,
        deployment: Deployment,
        ready: list[Pod],
        data: bytes,
        head: bool,
        deadline: float,
        request: Request,
        request_id: bytes,
        pair: ShadowPair,
    ) -> None:
        self._mirror_in_flight += 1
        if deployment.tracked:
            deployment.start(time.monotonic())
        else:
            deployment.in_flight += 1
        failed = True
        started = time.perf_counter()
        status, body = 502, b""
        try:
            response = await self._forward(deployment, ready, data, head, deadline)
            status, body = response.status, response.body
            failed = response.status >= 500
        except TimeoutError:
            status = 408
        except UpstreamError as exc:
            status = 503 if exc.retryable else 502
        finally:
            self._mirror_in_flight -= 1
            if deployment.tracked:
                deployment.finish()
            else:
                deployment.in_flight -= 1
            if failed:
                self.metrics.mirror.labels(deployment.name, "failed").inc()
        elapsed = time.perf_counter() - started
        collect = deployment.route.collector
        if collect is not None and sampled(collect, request_id):
            self._collect(deployment, "mirror", request, request_id, elapsed, status, body)
        pair.set_mirror(status, body, elapsed)

    async def drain_mirrors(self) -> None:
        if self._mirror_tasks:
            await asyncio.wait(self._mirror_tasks)

    def _log_access(
        self,
        request: Request,
        request_id: bytes,
        status: int,
        deployment: str,
        rerouted_from: str | None,
        elapsed: float,
    ) -> None:
        fields = {
            "request_id": request_id.decode("latin-1"),
            "method": request.method.decode("latin-1"),
            "path": request.target.decode("latin-1"),
            "status": status,
            "deployment": deployment,
            "duration_ms": round(elapsed * 1000, 3),
        }
        if rerouted_from is not None:
            fields["rerouted_from"] = rerouted_from
        access_log.info("request", extra={"fields": fields})


def _expire(deployment: Deployment, waiter: asyncio.Future[bool]) -> None:
    """A held request's wait is over (unless it was admitted just before)."""
    if not waiter.done():
        deployment.leave(waiter)
        waiter.set_result(False)


def _refused(deployment: Deployment, code: str, reason: str) -> Response:
    """503 for a request that could not be held (code queue_full) or was held in vain (queue_timeout).
    With no ready pod the deployment is starting (or scaled to zero and waking up): a timed-out request
    says deployment_starting, and either says retry in RETRY_AFTER_STARTING_S; else in 1 s."""
    name = deployment.name
    if not deployment.has_ready_pod(time.monotonic()):
        retry_after = RETRY_AFTER_STARTING_S
        if code == "queue_timeout":
            code, message = "deployment_starting", f"deployment {name!r} has no ready pod yet; it is starting"
        else:
            message = f"deployment {name!r} has no ready pod yet (it is starting) and {reason}"
    else:
        retry_after = 1
        message = f"deployment {name!r} is busy: {reason}; retry later"
    response = error_response(503, code, message)
    response.headers.append((_RETRY_AFTER, str(retry_after).encode()))
    return response


def _upstream_request(request: Request, request_id: bytes) -> bytes:
    parts = [request.method, b" ", request.target, b" HTTP/1.1\r\n"]
    for name, value in request.headers:
        parts += (name, b": ", value, b"\r\n")
    parts += (b"x-request-id: ", request_id, b"\r\n")
    body = request.body
    if body or request.method not in (b"GET", b"HEAD"):
        parts += (b"content-length: ", str(len(body)).encode(), b"\r\n")
    parts += (b"\r\n", body)
    return b"".join(parts)
