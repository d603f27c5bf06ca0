"""azmlinfsrv 1.5.1's api/aml_response.py: what a @rawhttp run() returns to set status, headers and body."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from werkzeug.wrappers import Response


class AMLResponse(Response):
    """AMLResponse(message, status_code, response_headers, json_str): `json_str` sends `message` as
    JSON; a None message sends `{}`; a header value with commas becomes repeated headers, as azmlinfsrv."""

    def __init__(
        self,
        message: Any,
        status_code: int,
        response_headers: Mapping[str, str] | None = None,
        json_str: bool = False,
        run_function_failed: bool = False,
    ) -> None:
        response_headers = response_headers or {}
        if message is not None:
            if json_str:
                super().__init__(json.dumps(message), status=status_code, mimetype="application/json")
            else:
                super().__init__(message, status=status_code)
                if "Content-Type" in response_headers:
                    self.headers.remove("Content-Type")  # the loop below adds the script's
        else:
            super().__init__(json.dumps({}), status=status_code, mimetype="application/json")
        self.headers["x-ms-run-function-failed"] = str(run_function_failed)
        for header, value in response_headers.items():
            for v in value.split(","):
                self.headers.add_header(header, v.strip())
