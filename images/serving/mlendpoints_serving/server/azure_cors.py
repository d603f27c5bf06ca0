"""azmlinfsrv's CORS, for scoring-script servers: `AML_CORS_ORIGINS` (comma-separated origins).

azmlinfsrv 1.5.1 (aml_blueprint.setup) applies `flask_cors.CORS(blueprint, methods=["GET", "POST"],
origins=[o.strip() for o in AML_CORS_ORIGINS.split(",")])` to its routes `/`, `/score` and
`/swagger.json`. This module gives the same headers as flask-cors 6.0 with those options (its
core.get_cors_headers); they depend on the request only, so they are computed before the handler runs.
"""

from __future__ import annotations

import re

Headers = tuple[tuple[bytes, bytes], ...]

ROUTES = frozenset(("/", "/score", "/swagger.json"))  # azmlinfsrv's blueprint: CORS applies to these
METHODS = "GET, POST"  # azmlinfsrv's methods, as flask-cors joins them
_REGEX_HINTS = frozenset("*\\]?$^[]()")  # flask-cors: an origin with one of these is a regex


class AzureCors:
    def __init__(self, setting: str) -> None:
        """Raises ValueError on an origin that looks like a regex but is none (flask-cors refuses it)."""
        origins = [".*" if origin == "*" else origin for origin in (o.strip() for o in setting.split(","))]
        self._wildcard = ".*" in origins
        self._count = len(origins)
        self._literals = [o for o in origins if _REGEX_HINTS.isdisjoint(o)]
        self._regexes: list[re.Pattern[str]] = []
        for origin in origins:
            if not _REGEX_HINTS.isdisjoint(origin):
                try:
                    self._regexes.append(re.compile(origin, re.IGNORECASE))
                except re.error as exc:
                    message = f"{origin!r} in AML_CORS_ORIGINS is not a valid regular expression"
                    raise ValueError(message) from exc

    def _allowed(self, origin: str | None) -> str | None:
        if origin:  # an empty Origin counts as none, as in flask-cors
            folded = origin.casefold()
            if any(folded == o.casefold() for o in self._literals) or any(
                r.match(origin) for r in self._regexes
            ):
                return origin
            return None
        if self._wildcard:  # always_send: no Origin sent, still an answer
            return "*"
        # flask-cors lists the literal origins sorted, and keeps the first of them
        return min(self._literals) if self._literals else None

    def headers(self, method: str, request_headers: list[tuple[bytes, bytes]]) -> Headers:
        """The CORS headers of an answer to this request; none when its origin is not allowed."""
        got: dict[bytes, str] = {}
        for name, value in request_headers:
            if name in _READ:  # gunicorn joins a repeated header's values with ","
                text = value.decode("latin-1")
                got[name] = f"{got[name]},{text}" if name in got else text
        allowed = self._allowed(got.get(b"origin"))
        if allowed is None:
            return ()
        out = [(b"access-control-allow-origin", allowed.encode("latin-1"))] if allowed else []
        if got.get(b"access-control-request-private-network") == "true":
            out.append((b"access-control-allow-private-network", b"false"))
        if method == "OPTIONS":
            requested = got.get(b"access-control-request-method", "").upper()
            if requested and requested in METHODS:  # flask-cors tests a substring of "GET, POST"
                asked = got.get(b"access-control-request-headers")
                if asked:  # every header is allowed: the requested ones, sorted
                    allow = ", ".join(sorted(h.strip() for h in asked.split(",")))
                    if allow:
                        out.append((b"access-control-allow-headers", allow.encode("latin-1")))
                out.append((b"access-control-allow-methods", METHODS.encode()))
        if allowed != "*" and (self._count > 1 or self._regexes):
            out.append((b"vary", b"Origin"))
        return tuple(out)


_READ = frozenset(
    (
        b"origin",
        b"access-control-request-method",
        b"access-control-request-headers",
        b"access-control-request-private-network",
    )
)
