"""The limit of the stack: a bare ASGI app on uvicorn + httptools + uvloop, as mlendpoints-serve runs.

It reads the request body and answers a fixed JSON body, with the same uvicorn settings as
`mlendpoints_serving.server.cli.run_worker` (no access log, no server or date header). No
Python server on this stack answers faster; bench.serving reports the others as a share of it.

    python -m bench.bare_asgi PORT           # uvicorn's own httptools protocol (the issue's limit)
    python -m bench.bare_asgi PORT --http1   # the same answer through mlendpoints-serve's protocol
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any

BODY = b'{"predictions": [206.11]}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(
    scope: dict[str, Any],
    receive: Callable[[], Awaitable[dict[str, Any]]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


class BareCore:
    """The fixed answer as mlendpoints_serving.server.http1 takes an app: the limit of its own stack."""

    max_body_bytes = 100 * 1024 * 1024

    async def handle(
        self, scope: dict[str, Any], body: object
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        return 200, HEADERS, BODY


def main() -> None:
    import uvicorn

    if "--http1" in sys.argv:
        from mlendpoints_serving.server.http1 import Http1Protocol

        uvicorn.run(
            BareCore(),  # type: ignore[arg-type]
            host="127.0.0.1",
            port=int(sys.argv[1]),
            loop="uvloop",
            http=Http1Protocol,
            lifespan="off",
            access_log=False,
            log_config=None,
            backlog=2048,
        )
        return

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_config=None,
        server_header=False,
        date_header=False,
        backlog=2048,
    )


if __name__ == "__main__":
    main()
