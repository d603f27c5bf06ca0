"""azmlinfsrv 1.5.1's api/aml_request.py: `@rawhttp` marks run() as taking the raw request, an AMLRequest."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any, TypeVar

from werkzeug.wrappers import Request

F = TypeVar("F", bound=Callable[..., Any])

# As azmlinfsrv: a module-wide flag, not a mark on the function (a script may wrap run() again).
_rawHttpRequested = False


def rawhttp(func: F) -> F:
    """Applied to run() in score.py: run(request) gets the HTTP request (an AMLRequest)."""
    global _rawHttpRequested
    _rawHttpRequested = True
    return func


def requested() -> bool:
    return _rawHttpRequested


def reset() -> None:
    """Before a script is imported (tests load several in one process)."""
    global _rawHttpRequested
    _rawHttpRequested = False


class AMLRequest(Request):
    """The request a @rawhttp run() gets: werkzeug's Request (azmlinfsrv: flask's, a subclass of it
    adding only routing attributes), over a WSGI environ made from the ASGI scope and the read body."""

    @classmethod
    def from_asgi(cls, scope: dict[str, Any], body: bytes) -> AMLRequest:
        server = scope.get("server") or ("localhost", 80)
        client = scope.get("client")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": scope["method"],
            "SCRIPT_NAME": "",
            # WSGI strings are bytes as latin-1 (PEP 3333); ASGI's path is already decoded UTF-8.
            "PATH_INFO": scope["path"].encode("utf-8").decode("latin-1"),
            "QUERY_STRING": scope["query_string"].decode("latin-1"),
            "SERVER_NAME": str(server[0]),
            "SERVER_PORT": str(server[1]),
            "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
            "REMOTE_ADDR": client[0] if client else "",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scope.get("scheme", "http"),
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": io.StringIO(),
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "CONTENT_LENGTH": str(len(body)),
        }
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1").upper().replace("-", "_")
            value = raw_value.decode("latin-1")
            if name == "CONTENT_TYPE":
                environ["CONTENT_TYPE"] = value
            elif name != "CONTENT_LENGTH":  # the body is read: its real length stands
                key = f"HTTP_{name}"
                environ[key] = f"{environ[key]},{value}" if key in environ else value
        return cls(environ)
