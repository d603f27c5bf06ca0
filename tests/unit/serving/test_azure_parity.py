"""The scoring-script server's azmlinfsrv behaviours against the libraries azmlinfsrv 1.5.1 runs on.

azmlinfsrv itself is not installed here (it pins Flask, OpenTelemetry, ...); its code paths are a few
lines over Flask/werkzeug and flask-cors, which are: GET /score's input is
`json.dumps({k: parse(v) | [parse(v) ...]})` over `request.args` (input_parsers._parse_get_parameters),
CORS is `flask_cors.CORS(blueprint, methods=["GET", "POST"], origins=...)` (aml_blueprint.setup).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from mlendpoints_serving.server.app import azure_query_input
from mlendpoints_serving.server.azure_cors import AzureCors

flask = pytest.importorskip("flask")

QUERIES = [
    "a=1&b=[1,2]&c=a&d=null&foo=bar1&foo=bar2&e=&s=%22x%22&t=hello+world&n=%7B%22k%22%3A%201.5%7D&f",
    "",
    "x=NaN&y=1e400&z=%20%201%20&u=%C3%A9&u=%5B%22%C3%A9%22%5D&k=1&k=2&k=3&;=1&a;b=2&t=true",
    "q=" + "9" * 5000,  # past int's digit limit: json.loads raises ValueError, the text stays
]


def _azmlinfsrv_get_input(query: str) -> str:
    """input_parsers.JsonStringInput._parse_get_input of azmlinfsrv 1.5.1, over werkzeug's args."""

    def parse(text: str) -> Any:
        try:
            return json.loads(text)
        except ValueError:
            return text

    app = flask.Flask("azmlinfsrv")
    with app.test_request_context("/score?" + query, method="GET"):
        args = flask.request.args
        parsed = {}
        for k in args:  # azmlinfsrv: args.keys()
            values = args.getlist(k)
            parsed[k] = parse(values[0]) if len(values) == 1 else [parse(v) for v in values]
        return json.dumps(parsed)


@pytest.mark.parametrize("query", QUERIES)
def test_get_score_input_is_azmlinfsrvs_string(query: str) -> None:
    assert azure_query_input(query.encode()) == _azmlinfsrv_get_input(query)


SETTINGS = [
    "https://a.com",
    "https://a.com, https://b.com",
    "*",
    "https://*.x.com",
    "https://b.com,",
    " https://B.com ,https://a.com",
    "https://a.com,*",
]
REQUESTS: list[tuple[str, dict[str, str]]] = [
    ("GET", {}),
    ("POST", {"Origin": "https://a.com"}),
    ("POST", {"Origin": "https://A.COM"}),
    ("GET", {"Origin": "https://evil.com"}),
    ("POST", {"Origin": "https://q.x.com"}),
    ("GET", {"Origin": ""}),
    (
        "OPTIONS",
        {
            "Origin": "https://a.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "X-B, content-type,,a",
        },
    ),
    ("OPTIONS", {"Origin": "https://a.com", "Access-Control-Request-Method": "put"}),
    ("OPTIONS", {"Origin": "https://a.com", "Access-Control-Request-Method": "t, p"}),
    ("OPTIONS", {"Access-Control-Request-Method": "GET"}),
    ("POST", {"Origin": "https://b.com", "Access-Control-Request-Private-Network": "true"}),
]


@pytest.mark.parametrize("setting", SETTINGS)
def test_cors_headers_are_flask_cors_as_azmlinfsrv_configures_it(setting: str) -> None:
    flask_cors = pytest.importorskip("flask_cors")
    app, blueprint = flask.Flask("azmlinfsrv"), flask.Blueprint("main", "azmlinfsrv")

    @blueprint.route("/score", methods=["GET", "POST", "OPTIONS"], provide_automatic_options=False)
    def score() -> str:
        return ""

    flask_cors.CORS(blueprint, methods=["GET", "POST"], origins=[o.strip() for o in setting.split(",")])
    app.register_blueprint(blueprint)
    client, ours = app.test_client(), AzureCors(setting)
    for method, headers in REQUESTS:
        answer = client.open("/score", method=method, headers=headers)
        theirs = [
            (name.lower(), value)
            for name, value in answer.headers.items()
            if name.lower().startswith("access-control") or name.lower() == "vary"
        ]
        raw = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
        mine = [(name.decode(), value.decode()) for name, value in ours.headers(method, raw)]
        assert mine == theirs, (method, headers)


def test_a_bad_origin_pattern_is_refused() -> None:
    with pytest.raises(ValueError, match=r"'https://\[' in AML_CORS_ORIGINS is not a valid regular"):
        AzureCors("https://a.com,https://[")
