"""The HTTP transport: a raw ASGI app (no framework) routing to the protocol codecs and the data plane.

It reads bodies (enforcing the size limit), applies the request timeout, maps core
errors to JSON error responses, and records metrics. Decoding is the codecs' job,
batching and inference the data plane's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from mlendpoints_serving.model import InputError, ModelError
from mlendpoints_serving.model.core import dumps
from mlendpoints_serving.server import openapi
from mlendpoints_serving.server.codecs import AzureCodec, ClientError, MlflowCodec, V2Codec, v2_datatype
from mlendpoints_serving.server.dataplane import DataPlane
from mlendpoints_serving.server.metrics import Metrics
from mlendpoints_serving.server.settings import ServeSettings

if TYPE_CHECKING:
    from multiprocessing.sharedctypes import Synchronized

log = logging.getLogger("mlendpoints.serve")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Response = tuple[int, bytes, bytes]  # status, content type, body

JSON_TYPE = b"application/json"


def error(status: int, code: str, message: str) -> Response:
    return status, JSON_TYPE, orjson.dumps({"error": {"code": code, "message": message}})


def ok(obj: Any) -> Response:
    return 200, JSON_TYPE, orjson.dumps(obj)


class Request:
    __slots__ = ("body", "content_type", "method", "path")

    def __init__(self, scope: Scope, body: bytes) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.body = body
        self.content_type: str | None = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                self.content_type = value.decode("latin-1")


class ServerApp:
    def __init__(
        self,
        settings: ServeSettings,
        metrics: Metrics,
        on_load_failed: Callable[[str], None],
        workers_loaded: Synchronized[int] | None = None,
        on_stuck: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.dataplane = DataPlane(settings, metrics, workers_loaded, on_stuck)
        self._on_load_failed = on_load_failed
        self._timeout_s = settings.request_timeout_ms / 1000.0
        self._azure, self._mlflow, self._v2 = AzureCodec(), MlflowCodec(), V2Codec(settings.model_name)
        self._swagger: bytes | None = None
        self._counters: dict[tuple[str, int], Any] = {}
        self._histograms: dict[str, Any] = {}
        v2 = f"/v2/models/{settings.model_name}"
        self.routes: dict[tuple[str, str], Callable[[Request], Awaitable[Response]]] = {
            ("POST", "/score"): self.score,
            ("POST", "/invocations"): self.invocations,
            ("POST", f"{v2}/infer"): self.v2_infer,
            ("GET", v2): self.v2_metadata,
            ("GET", f"{v2}/ready"): self.health,
            ("GET", "/v2/health/ready"): self.health,
            ("GET", "/v2/health/live"): self.live,
            ("GET", "/v2"): self.v2_server,
            ("GET", "/"): self.live,
            ("GET", "/ping"): self.health,
            ("GET", "/health"): self.health,
            ("GET", "/swagger.json"): self.swagger,
            ("GET", "/metrics"): self.prometheus,
        }
        self._paths = {path for _, path in self.routes}

    # -- ASGI ---------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                asyncio.get_running_loop().create_task(self._load())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.dataplane.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _load(self) -> None:
        try:
            await self.dataplane.load()
        except Exception as exc:
            log.exception("loading failed")
            self._on_load_failed(f"cannot load {self.settings.model_dir}: {type(exc).__name__}: {exc}")

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        path = scope["path"]
        handler = self.routes.get((scope["method"], path))
        route = path if handler is not None else "other"
        self.metrics.in_flight.inc()
        status = 500
        try:
            if handler is None:
                status, ctype, body = (
                    error(405, "method_not_allowed", f"{scope['method']} {path} is not allowed")
                    if path in self._paths
                    else error(404, "not_found", f"no route {path}")
                )
            else:
                try:
                    async with asyncio.timeout(self._timeout_s):
                        request = Request(scope, await self._read_body(scope, receive))
                        status, ctype, body = await handler(request)
                except TimeoutError:
                    status, ctype, body = error(
                        408, "request_timeout", f"no response within {self.settings.request_timeout_ms} ms"
                    )
                except ClientError as exc:
                    status, ctype, body = error(exc.status, exc.code, exc.message)
                except Exception as exc:  # a bug of ours: still a JSON error, with the trace in the log
                    log.exception("unhandled error on %s", path)
                    status, ctype, body = error(500, "internal_error", f"{type(exc).__name__}: {exc}")
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})
        finally:
            self.metrics.in_flight.dec()
            self._observe(route, status, time.perf_counter() - started)

    def _observe(self, route: str, status: int, seconds: float) -> None:
        counter = self._counters.get((route, status))
        if counter is None:
            counter = self._counters[(route, status)] = self.metrics.requests.labels(route, str(status))
        counter.inc()
        hist = self._histograms.get(route)
        if hist is None:
            hist = self._histograms[route] = self.metrics.latency.labels(route)
        hist.observe(seconds)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.settings.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                raise ClientError(413, "body_too_large", f"request body over {limit} bytes")
        chunks, size = [], 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise ClientError(413, "body_too_large", f"request body over {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body"):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    # -- scoring ------------------------------------------------------------------------------------
    async def _predict(self, request: Request, codec: AzureCodec | MlflowCodec | V2Codec) -> Response:
        model = self.dataplane.model
        if model is None:
            if self.dataplane.script is not None:
                return error(404, "not_found", "this deployment runs a scoring script: use POST /score")
            return self._not_ready()
        try:
            inp, context = codec.decode(model, request.body, request.content_type)
            predictions = await self.dataplane.infer(inp)
            return 200, JSON_TYPE, codec.encode(predictions, context)
        except ClientError as exc:
            return error(exc.status, exc.code, exc.message)
        except InputError as exc:
            return error(400, exc.code, exc.message)
        except ModelError as exc:
            log.error("model raised %s", exc, exc_info=exc.__cause__)
            return error(500, "model_error", f"{exc.type}: {exc.message}")

    def _not_ready(self) -> Response:
        reason = self.dataplane.load_error or "the model is still loading"
        return error(503, "not_ready", reason)

    async def score(self, request: Request) -> Response:
        if self.dataplane.script is not None:
            return await self._run_script(request)
        return await self._predict(request, self._azure)

    async def invocations(self, request: Request) -> Response:
        return await self._predict(request, self._mlflow)

    async def v2_infer(self, request: Request) -> Response:
        return await self._predict(request, self._v2)

    async def _run_script(self, request: Request) -> Response:
        try:
            raw = request.body.decode("utf-8")
        except UnicodeDecodeError:
            return error(400, "invalid_encoding", "request body is not UTF-8")
        try:
            result = await self.dataplane.run_script(raw)
        except Exception as exc:
            log.exception("scoring script run() raised")
            return error(500, "script_error", f"{type(exc).__name__}: {exc}")
        try:
            return 200, JSON_TYPE, dumps(result)
        except TypeError as exc:
            return error(500, "script_error", f"run() returned a value that is not JSON: {exc}")

    # -- health, metadata, metrics ------------------------------------------------------------------
    async def live(self, request: Request) -> Response:
        return ok({"status": "alive"})

    async def health(self, request: Request) -> Response:
        return ok({"status": "ready"}) if self.dataplane.ready else self._not_ready()

    async def v2_server(self, request: Request) -> Response:
        return ok({"name": "mlendpoints", "version": "1", "extensions": []})

    async def v2_metadata(self, request: Request) -> Response:
        model = self.dataplane.model
        if model is None:
            return self._not_ready()
        # MLflow's schema objects: the first use may import MLflow, so off the event loop.
        inputs, outputs = await asyncio.to_thread(
            lambda: (_v2_tensors(model.input_schema), _v2_tensors(model.output_schema))
        )
        return ok(
            {
                "name": self.settings.model_name,
                "versions": [],
                "platform": "mlflow",
                "inputs": inputs,
                "outputs": outputs,
            }
        )

    async def swagger(self, request: Request) -> Response:
        if self._swagger is None:
            if not self.dataplane.ready:
                return self._not_ready()
            spec = await asyncio.to_thread(
                openapi.build, self.dataplane.model, f"{self.settings.model_name} scoring"
            )
            self._swagger = orjson.dumps(spec)
        return 200, JSON_TYPE, self._swagger

    async def prometheus(self, request: Request) -> Response:
        return 200, b"text/plain; version=0.0.4; charset=utf-8", self.metrics.render()


def _v2_tensors(schema: Any) -> list[dict[str, Any]]:
    if schema is None:
        return []
    import numpy as np

    out = []
    for i, spec in enumerate(schema.inputs):
        if schema.is_tensor_spec():
            out.append(
                {
                    "name": spec.name or f"tensor{i}",
                    "datatype": v2_datatype(np.dtype(spec.type)),
                    "shape": list(spec.shape),
                }
            )
        else:
            dtype = spec.type.to_numpy() if hasattr(spec.type, "to_numpy") else np.dtype(object)
            out.append({"name": spec.name or f"column{i}", "datatype": v2_datatype(dtype), "shape": [-1]})
    return out
