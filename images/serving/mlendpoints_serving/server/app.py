"""The HTTP transport: a raw ASGI app (no framework) routing to the protocol codecs and the data plane.

It reads bodies (enforcing the size limit), applies the request timeout, maps core
errors to JSON error responses, and records metrics. Decoding is the codecs' job,
batching and inference the data plane's.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from mlendpoints_serving.contract import (
    ENV_AML_CORS_ORIGINS,
    ENV_SCORING_TIMEOUT_MS,
    HEADER_RUN_FN_EXEC_MS,
    HEADER_RUN_FUNCTION_FAILED,
)
from mlendpoints_serving.model import (
    DeviceLost,
    DeviceOutOfMemory,
    InputError,
    ModelError,
    ModelInput,
    ServedModel,
)
from mlendpoints_serving.model.core import dumps
from mlendpoints_serving.server import azure_cors, http1, openapi, v2
from mlendpoints_serving.server.codecs import AzureCodec, ClientError, MlflowCodec
from mlendpoints_serving.server.dataplane import DataPlane
from mlendpoints_serving.server.deadlines import Deadlines
from mlendpoints_serving.server.metrics import Metrics
from mlendpoints_serving.server.settings import ServeSettings

if TYPE_CHECKING:
    from multiprocessing.sharedctypes import Synchronized

log = logging.getLogger("mlendpoints.serve")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = tuple[tuple[bytes, bytes], ...]
Response = tuple[int, bytes, bytes, Headers]  # status, content type, body, more headers

JSON_TYPE = b"application/json"
NO_ROWS = "the input has no rows; send at least one"


def error(status: int, code: str, message: str, headers: Headers = ()) -> Response:
    return status, JSON_TYPE, orjson.dumps({"error": {"code": code, "message": message}}), headers


def v2_error(status: int, code: str, message: str, headers: Headers = ()) -> Response:
    """The Open Inference Protocol's error form, on /v2 routes."""
    return status, JSON_TYPE, v2.error_body(code, message), headers


# azmlinfsrv's own wording and header: its clients read `message` and `x-ms-run-function-failed`.
RUN_FAILED_MESSAGE = "An unexpected error occurred in scoring script. Check the logs for more info."
RUN_INTERNAL_MESSAGE = "An unexpected internal error occurred. Check the logs for more info."
RUN_OK_HEADERS: Headers = ((HEADER_RUN_FUNCTION_FAILED.encode(), b"False"),)
RUN_FAILED_HEADERS: Headers = ((HEADER_RUN_FUNCTION_FAILED.encode(), b"True"),)


def _script_failed(message: str, *, failed: bool, code: str = "script_error") -> Response:
    """A generic 500 in azmlinfsrv's shape (`message`) and ours (`error.code`): no exception text."""
    body = {"message": message, "error": {"code": code, "message": message}}
    return 500, JSON_TYPE, orjson.dumps(body), RUN_FAILED_HEADERS if failed else RUN_OK_HEADERS


def _azure_refused(exc: ClientError) -> Response:
    """A refused request to a scoring script in azmlinfsrv's shape (`message`) and ours (`error`)."""
    body = {"message": exc.message, "error": {"code": exc.code, "message": exc.message}}
    return exc.status, JSON_TYPE, orjson.dumps(body), RUN_OK_HEADERS  # azmlinfsrv: run() did not fail


def scoring_timeout_ms(environ: Mapping[str, str]) -> int | None:
    """SCORING_TIMEOUT_MS as azmlinfsrv reads it (a whole number of ms); None when unset. A value that
    is not a positive integer raises ValueError, which stops the server at start (cli)."""
    value = environ.get(ENV_SCORING_TIMEOUT_MS, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) == 0:
        raise ValueError(
            f"{ENV_SCORING_TIMEOUT_MS} must be a positive whole number of milliseconds, got {value!r}"
        )
    return int(value)


class Ran(NamedTuple):
    """What run() returned, and how long it ran in the inference thread."""

    result: Any
    elapsed_ms: float


def _exec_ms(elapsed_ms: float) -> tuple[bytes, bytes]:
    # azmlinfsrv formats it explicitly ('0.012', never '1.2e-02'); its clients parse it as a float.
    return HEADER_RUN_FN_EXEC_MS.encode(), f"{elapsed_ms:.3f}".encode()


def _run_raised(exc: Exception) -> Response:
    # As azmlinfsrv: the exception's text may hold the request's data or the script's
    # secrets, so it stays in the log (type, message, traceback); the client gets a generic 500.
    log.exception(
        "scoring script run() raised",
        extra={"fields": {"error_type": type(exc).__name__, "error": str(exc)}},
    )
    return _script_failed(RUN_FAILED_MESSAGE, failed=True)


def _run_result(result: Any, elapsed_ms: float) -> Response:
    try:
        return 200, JSON_TYPE, dumps(result), (*RUN_OK_HEADERS, _exec_ms(elapsed_ms))
    except TypeError as exc:
        # azmlinfsrv: a return value it cannot serialize is its own internal error, not run()'s.
        log.error(
            "scoring script run() returned a value that is not JSON",
            extra={"fields": {"error_type": type(result).__name__, "error": str(exc)}},
        )
        return _script_failed(RUN_INTERNAL_MESSAGE, failed=False)


_OWN_HEADERS = frozenset(("content-type", "content-length"))  # _http writes these two itself


def _from_werkzeug(response: Any, elapsed_ms: float) -> Response:
    """A @rawhttp run()'s werkzeug Response (an AMLResponse) as the answer: its status, headers and body
    (already read in the inference thread); as azmlinfsrv, a 5xx is marked as run()'s failure."""
    status: int = response.status_code
    extra: list[tuple[bytes, bytes]] = []
    for name, value in response.headers.items():
        lowered = name.lower()
        if lowered in _OWN_HEADERS or (status >= 500 and lowered == HEADER_RUN_FUNCTION_FAILED):
            continue
        extra.append((lowered.encode("latin-1"), value.encode("latin-1")))
    if status >= 500:
        extra.extend(RUN_FAILED_HEADERS)
    extra.append(_exec_ms(elapsed_ms))  # added, as azmlinfsrv: a run() setting it too sends both
    ctype = response.headers.get("Content-Type", "application/octet-stream").encode("latin-1")
    try:
        http1.checked([(b"content-type", ctype), *extra])
    except ValueError as exc:  # the script's headers would split the response
        log.error("scoring script run() returned an invalid header: %s", exc)
        return _script_failed(RUN_INTERNAL_MESSAGE, failed=False)
    return status, ctype, response.get_data(), tuple(extra)


AZURE_ID_LIMIT = 100  # azmlinfsrv's HEADER_LIMIT


def azure_request_ids(request_headers: list[tuple[bytes, bytes]]) -> tuple[Headers, Response | None]:
    """azmlinfsrv's request-id headers, for scoring-script deployments: `x-request-id` (the client's,
    else a UUID), `x-ms-request-id` (the client's, else `x-ms-client-request-id`, else the request id)
    and `x-ms-client-request-id` (the client's, else a sent `x-ms-request-id`); an id over 100
    characters is answered 431, as azmlinfsrv."""
    got = {n: v for n, v in request_headers if n in _AZURE_ID_NAMES}
    request_id = got.get(b"x-request-id") or str(uuid.uuid4()).encode()
    if len(request_id) > AZURE_ID_LIMIT:
        return (), error(431, "header_too_long", f"x-request-id must not exceed {AZURE_ID_LIMIT} characters")
    legacy = got.get(b"x-ms-request-id", b"")
    client = got.get(b"x-ms-client-request-id", b"")
    if legacy:
        client = client or legacy
    else:
        legacy = client or request_id
    if len(legacy) > AZURE_ID_LIMIT or len(client) > AZURE_ID_LIMIT:
        return ((b"x-request-id", request_id),), error(
            431,
            "header_too_long",
            f"x-ms-request-id and x-ms-client-request-id must not exceed {AZURE_ID_LIMIT} characters",
        )
    ids = [(b"x-request-id", request_id), (b"x-ms-request-id", legacy)]
    if client:
        ids.append((b"x-ms-client-request-id", client))
    return tuple(ids), None


_AZURE_ID_NAMES = frozenset((b"x-request-id", b"x-ms-request-id", b"x-ms-client-request-id"))


def azure_query_input(query: bytes) -> str:
    """azmlinfsrv's GET /score input for an undecorated run() (JsonStringInput): `json.dumps` of the
    query's parameters (azure_query_parameters). The stdlib's json on both sides, as azmlinfsrv, so
    run() sees the same string."""
    return json.dumps(azure_query_parameters(query))


def azure_query_parameters(query: bytes) -> dict[str, Any]:
    """azmlinfsrv's input_parsers._parse_get_parameters: each query parameter JSON-decoded when it can
    be, else its text; a repeated one becomes a list. Unlike azmlinfsrv (werkzeug keeps such bytes
    percent-encoded), a query that is not UTF-8 is refused, as a body that is not UTF-8 is."""
    try:
        pairs = urllib.parse.parse_qsl(query.decode(), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise ClientError(400, "invalid_encoding", "the query string is not UTF-8") from None
    params: dict[str, list[Any]] = {}
    for name, text in pairs:
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        except RecursionError:
            raise ClientError(400, "invalid_input", f"query parameter {name!r} nests too deeply") from None
        params.setdefault(name, []).append(value)
    return {name: values[0] if len(values) == 1 else values for name, values in params.items()}


def swagger_version(query: bytes) -> str | None:
    """`version` of a /swagger.json query (the first, as azmlinfsrv's werkzeug reads it), None without
    one; other parameters are ignored. Only the documents of valid versions are cached."""
    values = urllib.parse.parse_qs(query.decode("latin-1"), keep_blank_values=True).get("version")
    return values[0] if values else None


def _is_json(content_type: str) -> bool:
    """werkzeug's Request.is_json, which azmlinfsrv asks: application/json or application/*+json."""
    mimetype = content_type.split(";", 1)[0].strip().lower()
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )


def azure_schema_body(content_type: str | None, body: bytes) -> dict[str, Any]:
    """The POST body of a run() decorated with inference-schema (azmlinfsrv's ObjectInput): a JSON
    object, whose keys are run()'s arguments; azmlinfsrv's status and wording when it is not one."""
    if not _is_json(content_type or ""):
        raise ClientError(415, "unsupported_media_type", "Expects Content-Type to be application/json")
    try:
        parsed = json.loads(body)
    except ValueError as exc:  # JSONDecodeError, and a body in no Unicode encoding (azmlinfsrv: a 500)
        if body:
            raise ClientError(400, "invalid_json", f"POST body could not be decoded as JSON: {exc}") from None
        raise ClientError(400, "invalid_json", "POST body is empty. Expecting a JSON dictionary.") from None
    except RecursionError:
        raise ClientError(400, "invalid_json", "POST body nests too deeply") from None
    if not isinstance(parsed, dict):
        raise ClientError(400, "invalid_input", "POST body should be a JSON dictionary.")
    return parsed


def azure_schema_arguments(parameters: Sequence[inspect.Parameter], given: dict[str, Any]) -> dict[str, Any]:
    """azmlinfsrv's ObjectInput._extract_parameters: each of run()'s parameters from the JSON object by
    name, else its default; other keys are ignored."""
    arguments = {}
    for parameter in parameters:
        value = given.get(parameter.name, parameter.default)
        if value is inspect.Parameter.empty:
            raise ClientError(
                400, "invalid_input", f"A value is not provided for the {parameter.name!r} parameter."
            )
        arguments[parameter.name] = value
    return arguments


_LAST_WINS = frozenset(("Content-Type", "Content-Length"))


def azure_run_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The `request_headers` azmlinfsrv gives run(): `dict(flask.request.headers)` under gunicorn, so
    names Title-Cased by werkzeug (`str.title()`), a repeated header's values joined by "," (gunicorn's
    wsgi.create; it refuses a repeated Content-Type, here the last one counts), an empty Content-Type or
    Content-Length left out (werkzeug's EnvironHeaders), a name with "_" dropped (gunicorn >= 23's
    header_map "drop")."""
    headers: dict[str, str] = {}
    for name, value in raw:
        if b"_" in name:
            continue
        key, text = name.decode("latin-1").title(), value.decode("latin-1")
        known = headers.get(key)
        headers[key] = text if known is None or key in _LAST_WINS else f"{known},{text}"
    for key in _LAST_WINS:
        if headers.get(key) == "":
            del headers[key]
    return headers


def ok(obj: Any) -> Response:
    return 200, JSON_TYPE, orjson.dumps(obj), ()


class Request:
    __slots__ = ("body", "content_type", "headers", "method", "path")

    def __init__(self, scope: Scope, body: bytes) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.body = body
        self.headers: list[tuple[bytes, bytes]] = scope["headers"]
        self.content_type: str | None = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                self.content_type = value.decode("latin-1")


class ScriptRequest(Request):
    """A scoring-script server's request, which also keeps the ASGI scope (GET /score's query string,
    a @rawhttp run()'s whole request): a class of its own so that MLflow models' requests cost nothing
    more."""

    __slots__ = ("scope",)

    def __init__(self, scope: Scope, body: bytes) -> None:
        super().__init__(scope, body)
        self.scope = scope


class ServerApp:
    def __init__(
        self,
        settings: ServeSettings,
        metrics: Metrics,
        on_load_failed: Callable[[str], None],
        workers_loaded: Synchronized[int] | None = None,
        on_fatal: Callable[[str], None] | None = None,
        worker: int = 0,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.dataplane = DataPlane(settings, metrics, workers_loaded, on_fatal, worker)
        self.max_body_bytes = settings.max_body_bytes  # read by the transports
        self._on_load_failed = on_load_failed
        # Called once with the reason when the worker must exit (a stuck prediction, a lost GPU).
        self._on_fatal = on_fatal
        self._exiting = False
        self._deadlines = Deadlines(settings.request_timeout_ms / 1000.0)  # one timer, not one per request
        self._azure, self._mlflow, self._v2 = AzureCodec(), MlflowCodec(), v2.V2Codec(settings.model_name)
        self._swagger: dict[str | None, bytes] = {}  # by ?version= (None: none given)
        self._stats = metrics.stats
        model_path = f"/v2/models/{settings.model_name}"
        self.routes: dict[tuple[str, str], Callable[[Request], Awaitable[Response]]] = {
            ("POST", "/score"): self.score,
            ("POST", "/invocations"): self.invocations,
            ("POST", f"{model_path}/infer"): self.v2_infer,
            ("GET", model_path): self.v2_metadata,
            ("GET", f"{model_path}/ready"): self.v2_model_ready,
            ("GET", "/v2/health/ready"): self.v2_ready,
            ("GET", "/v2/health/live"): self.live,
            ("GET", "/v2"): self.v2_server,
            ("GET", "/"): self.live,
            ("GET", "/ping"): self.health,
            ("GET", "/health"): self.health,
            ("GET", "/swagger.json"): self.swagger,
            ("GET", "/metrics"): self.prometheus,
        }
        self._request_type = Request
        self._cors: azure_cors.AzureCors | None = None
        self._scoring_timeout_ms: int | None = None
        if settings.scoring_script is not None:
            origins = os.environ.get(ENV_AML_CORS_ORIGINS)
            if origins:  # checked at start-up (cli): a bad origin stops the server there
                self._cors = azure_cors.AzureCors(origins)
            self._scoring_timeout_ms = scoring_timeout_ms(os.environ)  # checked at start-up too
            self._request_type = ScriptRequest
            self.routes[("OPTIONS", "/score")] = self.score_options  # azmlinfsrv's CORS preflight
            self.routes[("GET", "/score")] = self.score_get  # azmlinfsrv: the query string as run()'s data
        # RFC 9110: a 405 names the methods the resource has.
        self._allow: dict[str, bytes] = {}
        for method, path in sorted(self.routes):
            known = self._allow.get(path)
            self._allow[path] = method.encode() if known is None else known + b", " + method.encode()

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
        """ASGI over the core, for any ASGI server (mlendpoints-serve itself runs http1's protocol)."""
        body: bytes | http1.BodyTooLarge
        try:
            body = await self._read_body(scope, receive)
        except http1.BodyTooLarge as exc:
            body = exc
        status, headers, payload = await self.handle(scope, body)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def handle(
        self, scope: Scope, body: bytes | http1.BodyTooLarge
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """One request, whole: its status, headers (content type and length first) and body. Every
        failure is an answer here; the transports only read requests and write answers."""
        started = time.perf_counter()
        path = scope["path"]
        handler = self.routes.get((scope["method"], path))
        route = path if handler is not None else "other"
        stats = self._stats
        stats.in_flight += 1
        status = 500
        ids: Headers = ()
        refused: Response | None = None
        if self.settings.scoring_script is not None:
            ids, refused = azure_request_ids(scope["headers"])
            if self._cors is not None and handler is not None and path in azure_cors.ROUTES:
                ids += self._cors.headers(scope["method"], scope["headers"])  # the request decides them
        try:
            if refused is not None:
                status, ctype, payload, extra = refused
            elif handler is None:
                status, ctype, payload, extra = self._no_route(scope["method"], path)
            elif isinstance(body, http1.BodyTooLarge):
                status, ctype, payload, extra = _error_for(path)(
                    413, "body_too_large", f"request body over {self.max_body_bytes} bytes"
                )
            else:
                deadline = self._deadlines.start()
                try:
                    status, ctype, payload, extra = await handler(self._request_type(scope, body))
                except asyncio.CancelledError:
                    if not self._deadlines.expired(deadline):
                        raise
                    task, _ = deadline
                    task.uncancel()  # our deadline's cancel: answered, not propagated
                    status, ctype, payload, extra = _error_for(path)(
                        408, "request_timeout", f"no response within {self.settings.request_timeout_ms} ms"
                    )
                except ClientError as exc:
                    status, ctype, payload, extra = _error_for(path)(exc.status, exc.code, exc.message)
                except Exception as exc:  # a bug of ours: still a JSON error, with the trace in the log
                    log.exception("unhandled error on %s", path)
                    status, ctype, payload, extra = _error_for(path)(
                        500, "internal_error", f"{type(exc).__name__}: {exc}"
                    )
                finally:
                    self._deadlines.end(deadline)
            headers = [(b"content-type", ctype), (b"content-length", str(len(payload)).encode())]
            if extra:
                headers.extend(extra)
            if ids:
                headers.extend(ids)
            return status, headers, payload
        finally:
            stats.in_flight -= 1
            stats.observe(route, status, time.perf_counter() - started)

    def _no_route(self, method: str, path: str) -> Response:
        allow = self._allow.get(path)
        if allow is not None:
            return _error_for(path)(
                405,
                "method_not_allowed",
                f"{method} {path} is not allowed; allowed: {allow.decode()}",
                ((b"allow", allow),),
            )
        if path.startswith("/v2/models/"):
            return v2_error(
                404,
                "not_found",
                f"no route {path}; this server serves the model '{self.settings.model_name}'",
            )
        return _error_for(path)(404, "not_found", f"no route {path}")

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                raise http1.BodyTooLarge
        chunks, size = [], 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise http1.BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body"):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    # -- scoring ------------------------------------------------------------------------------------
    async def _predict(self, request: Request, codec: AzureCodec | MlflowCodec) -> Response:
        model = self.dataplane.model
        if model is None:
            if self.dataplane.script is not None:
                return error(404, "not_found", "this deployment runs a scoring script: use POST /score")
            return self._not_ready()
        try:
            inp, context = codec.decode(model, request.body, request.content_type)
            if inp.rows == 0:
                return error(400, "invalid_input", NO_ROWS)
            predictions = await self.dataplane.infer(inp)
            return 200, JSON_TYPE, codec.encode(predictions, context), ()
        except ClientError as exc:
            return error(exc.status, exc.code, exc.message)
        except InputError as exc:
            return error(400, exc.code, exc.message)
        except ModelError as exc:
            return self._model_error(model, inp, exc, error)
        except DeviceLost as exc:
            return self._device_lost(exc, error)

    def _model_error(
        self, model: ServedModel, inp: ModelInput, exc: ModelError, form: Callable[..., Response]
    ) -> Response:
        """The model raised: a 400 when the input is what it could not take, a 507 when the GPU ran out
        of memory on it (the worker goes on), else a 500."""
        if isinstance(exc, DeviceOutOfMemory):
            log.warning("the device ran out of memory on %s rows: %s", inp.rows, exc)
            return form(
                507,
                "device_out_of_memory",
                f"CUDA out of memory on {model.device} predicting {inp.rows or 'this'} row(s): "
                f"{exc.type}: {exc.message.splitlines()[0] if exc.message else ''}; "
                "send fewer rows per request, or lower the deployment's batching.maxBatchSize",
            )
        fault = model.input_fault(inp)
        if fault is not None:
            log.info("model refused the input (%s): %s", fault, exc)
            return form(
                400, "invalid_input", f"{fault}, which the model cannot take: {exc.type}: {exc.message}"
            )
        log.error("model raised %s", exc, exc_info=exc.__cause__)
        return form(500, "model_error", f"{exc.type}: {exc.message}")

    def _device_lost(self, exc: DeviceLost, form: Callable[..., Response]) -> Response:
        """The GPU's context is poisoned: answer 503, then the worker exits so that the pod restarts."""
        reason = (
            f"the CUDA context on {exc.device} is unusable after {exc.type}: {exc.message}; the worker exits"
        )
        if not self._exiting:
            self._exiting = True
            log.error("%s", reason)
            if self._on_fatal is not None:
                # Shortly after, so that this response (and those in flight) can still be written.
                asyncio.get_running_loop().call_later(0.2, self._on_fatal, reason)
        return form(503, "device_lost", reason)

    def _not_ready(self) -> Response:
        reason = self.dataplane.load_error or "the model is still loading"
        return error(503, "not_ready", reason)

    async def score(self, request: Request) -> Response:
        if self.dataplane.script is not None:
            return await self._run_script(request)
        return await self._predict(request, self._azure)

    async def score_get(self, request: Request) -> Response:
        """azmlinfsrv's GET /score: run() gets the query parameters as a JSON object (the body is ignored)."""
        assert isinstance(request, ScriptRequest)
        if self.dataplane.script is None:
            return self._not_ready()
        if self.dataplane.script_rawhttp:
            return await self._call_raw(request)
        if self.dataplane.script_schema_params is not None:
            try:
                given = azure_query_parameters(request.scope["query_string"])
            except ClientError as exc:
                return _azure_refused(exc)
            return await self._call_schema(given, request)
        return await self._call_run(azure_query_input(request.scope["query_string"]), request)

    async def score_options(self, request: Request) -> Response:
        """azmlinfsrv answers OPTIONS /score with an empty 200 (CORS headers, with AML_CORS_ORIGINS,
        are added in _http); a @rawhttp run() gets it, as azmlinfsrv."""
        if self.dataplane.script_rawhttp:
            assert isinstance(request, ScriptRequest)
            return await self._call_raw(request)
        return 200, b"text/html; charset=utf-8", b"", RUN_OK_HEADERS

    async def invocations(self, request: Request) -> Response:
        return await self._predict(request, self._mlflow)

    async def v2_infer(self, request: Request) -> Response:
        model = self.dataplane.model
        if model is None:
            return self._v2_no_model()
        try:
            inp, requested = self._v2.decode(model, request.body, request.content_type, request.headers)
            if inp.rows == 0:
                return v2_error(400, "invalid_input", NO_ROWS)
            predictions = await self.dataplane.infer(inp)
            ctype, body, header_length = self._v2.encode(model, predictions, requested)
        except ClientError as exc:
            return v2_error(exc.status, exc.code, exc.message)
        except InputError as exc:
            return v2_error(400, exc.code, exc.message)
        except ModelError as exc:
            return self._model_error(model, inp, exc, v2_error)
        except DeviceLost as exc:
            return self._device_lost(exc, v2_error)
        if header_length is None:
            return 200, ctype, body, ()
        return 200, ctype, body, ((b"inference-header-content-length", str(header_length).encode()),)

    def _v2_no_model(self) -> Response:
        if self.dataplane.script is not None:
            return v2_error(
                404, "not_found", "this deployment runs a scoring script: it has no V2 model; use POST /score"
            )
        reason = self.dataplane.load_error or "the model is still loading"
        return v2_error(503, "not_ready", reason)

    async def _run_script(self, request: Request) -> Response:
        if self.dataplane.script_rawhttp:
            assert isinstance(request, ScriptRequest)
            return await self._call_raw(request)
        if self.dataplane.script_schema_params is not None:
            try:
                given = azure_schema_body(request.content_type, request.body)
            except ClientError as exc:
                return _azure_refused(exc)
            return await self._call_schema(given, request)
        if not request.body:
            return error(400, "invalid_request", "the request has no body; run() is given the body")
        try:
            raw = request.body.decode("utf-8")
        except UnicodeDecodeError:
            return error(400, "invalid_encoding", "request body is not UTF-8")
        return await self._call_run(raw, request)

    async def _call_run(self, raw: str, request: Request) -> Response:
        ran = await self._run(raw, request)
        return _run_result(ran.result, ran.elapsed_ms) if isinstance(ran, Ran) else ran

    async def _call_schema(self, given: dict[str, Any], request: Request) -> Response:
        """A run() decorated with inference-schema, as azmlinfsrv: its arguments by name from the JSON
        object (or the query); the decorators turn each into its declared type."""
        assert self.dataplane.script_schema_params is not None
        try:
            arguments = azure_schema_arguments(self.dataplane.script_schema_params, given)
        except ClientError as exc:
            return _azure_refused(exc)
        ran = await self._run(arguments, request)
        return _run_result(ran.result, ran.elapsed_ms) if isinstance(ran, Ran) else ran

    async def _call_raw(self, request: ScriptRequest) -> Response:
        """A @rawhttp run(request): any method on /score; the request is werkzeug's, as azmlinfsrv's
        flask one; an AMLResponse (any werkzeug Response) it returns is the answer as it stands."""
        from werkzeug.wrappers import Response as WerkzeugResponse

        from mlendpoints_serving.azureml_services.aml_request import AMLRequest

        ran = await self._run(AMLRequest.from_asgi(request.scope, request.body), request)
        if not isinstance(ran, Ran):
            return ran
        if isinstance(ran.result, WerkzeugResponse):
            return _from_werkzeug(ran.result, ran.elapsed_ms)
        return _run_result(ran.result, ran.elapsed_ms)

    async def _run(self, raw: Any, request: Request) -> Ran | Response:
        """run() in the inference thread: (its result, ms) or, when it raised or ran past
        SCORING_TIMEOUT_MS, azmlinfsrv's 500 answer."""
        headers = None
        if self.dataplane.script_data_param is not None:  # run(data, request_headers), as azmlinfsrv
            headers = azure_run_headers(request.headers)
        try:
            if self._scoring_timeout_ms is None:
                return Ran(*await self.dataplane.run_script(raw, headers))
            return await self._run_within(self._scoring_timeout_ms, raw, headers)
        except Exception as exc:
            return _run_raised(exc)

    async def _run_within(self, limit_ms: int, raw: Any, headers: dict[str, str] | None) -> Ran | Response:
        """run() with azmlinfsrv's SCORING_TIMEOUT_MS, counted from when run() starts in the inference
        thread (as azmlinfsrv's SIGALRM), not while the request waits for the thread."""
        loop = asyncio.get_running_loop()
        started: asyncio.Future[float] = loop.create_future()

        def mark_started(at: float) -> None:
            if not started.done():  # cancelled when the answer went first
                started.set_result(at)

        def on_start(at: float) -> None:  # in the inference thread
            loop.call_soon_threadsafe(mark_started, at)

        # A task, so that a TimeoutError that run() raises itself is not taken for ours.
        task = asyncio.ensure_future(self.dataplane.run_script(raw, headers, on_start))
        try:
            await asyncio.wait((task, started), return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                left_s = limit_ms / 1000 - (time.perf_counter() - started.result())
                await asyncio.wait((task,), timeout=max(left_s, 0.0))
        finally:
            if not task.done():
                # The answer does not wait; a thread cannot be stopped, so run() goes on to its end
                # (the stuck-prediction watchdog restarts the worker when it never ends).
                task.cancel()
            started.cancel()
        if not task.done() or task.cancelled():
            log.error(
                "scoring script run() ran past %s",
                ENV_SCORING_TIMEOUT_MS,
                extra={"fields": {"timeout_ms": limit_ms}},
            )
            return _script_failed(f"Scoring timeout after {limit_ms} ms", failed=True, code="scoring_timeout")
        return Ran(*task.result())

    # -- health, metadata, metrics ------------------------------------------------------------------
    async def live(self, request: Request) -> Response:
        if self.settings.scoring_script is not None and request.path == "/":
            return 200, b"text/html; charset=utf-8", b"Healthy", ()  # azmlinfsrv's GET /, as Flask sends it
        return ok({"status": "alive"})

    async def health(self, request: Request) -> Response:
        return ok({"status": "ready"}) if self.dataplane.ready else self._not_ready()

    async def v2_server(self, request: Request) -> Response:
        return ok({"name": "mlendpoints", "version": "1", "extensions": v2.EXTENSIONS})

    async def v2_metadata(self, request: Request) -> Response:
        model = self.dataplane.model
        if model is None:
            return self._v2_no_model()
        return ok(self._v2.metadata(model))

    async def v2_ready(self, request: Request) -> Response:
        if self.dataplane.ready:
            return ok({"ready": True})
        return v2_error(503, "not_ready", self.dataplane.load_error or "the model is still loading")

    async def v2_model_ready(self, request: Request) -> Response:
        if self.dataplane.script is not None or not self.dataplane.ready:
            return self._v2_no_model()
        return ok({"name": self.settings.model_name, "ready": True})

    async def swagger(self, request: Request) -> Response:
        """This server's OpenAPI 3 document; a scoring script's server reads `?version=` as azmlinfsrv
        does (2, 3, 3.1). An MLflow model's requests keep no query string (its hot path stays lean):
        its one document is OpenAPI 3."""
        alias = swagger_version(request.scope["query_string"]) if isinstance(request, ScriptRequest) else None
        cached = self._swagger.get(alias)
        if cached is None:
            if not self.dataplane.ready:
                return self._not_ready()
            try:
                spec = await asyncio.to_thread(
                    openapi.document,
                    self.dataplane.model,
                    f"{self.settings.model_name} scoring",
                    self.dataplane.script,
                    alias,
                )
            except openapi.SwaggerUnavailable as exc:
                return _azure_refused(ClientError(404, "not_found", exc.message))
            cached = self._swagger[alias] = orjson.dumps(spec)
        return 200, JSON_TYPE, cached, ()

    async def prometheus(self, request: Request) -> Response:
        return 200, b"text/plain; version=0.0.4; charset=utf-8", self.metrics.render(), ()


def _error_for(path: str) -> Callable[..., Response]:
    """The error form of a route: the Open Inference Protocol's on /v2, ours elsewhere."""
    return v2_error if path.startswith("/v2") else error
