"""The collector's pure parts: sampling by request id, bodies, record lines; the answers' comparison."""

from __future__ import annotations

import base64
import json
import random

import orjson

from mlendpoints_serving.contract import CollectedRecord, CollectorRoute, compare_answers
from mlendpoints_serving.router.collector import body_field, record_line, sampled


def route(**settings: object) -> CollectorRoute:
    return CollectorRoute.model_validate({"destination": "/records", **settings})


def test_sampling_is_decided_by_the_request_id_at_the_rate() -> None:
    rng = random.Random(7)
    ids = [b"%032x" % rng.getrandbits(128) for _ in range(20000)]
    quarter = route(samplingRate=0.25)
    kept = [i for i in ids if sampled(quarter, i)]
    assert abs(len(kept) / len(ids) - 0.25) < 0.015  # ~5 standard deviations
    assert kept == [i for i in ids if sampled(quarter, i)]  # the same id, the same decision
    assert all(sampled(route(), i) for i in ids[:100])
    assert not any(sampled(route(samplingRate=0.0), i) for i in ids[:100])


def test_bodies_are_cut_at_the_limit_and_binary_goes_base64() -> None:
    assert body_field(b'{"a":1}', 100) == {"body": '{"a":1}', "encoding": "utf-8", "size": 7}
    cut = body_field(b"x" * 50, 10)
    assert cut == {"body": "x" * 10, "encoding": "utf-8", "size": 50, "truncated": True}
    binary = body_field(bytes(range(256)), 1000)
    assert binary["encoding"] == "base64" and base64.b64decode(binary["body"]) == bytes(range(256))


def test_record_line_keeps_only_listed_headers_and_never_authorization() -> None:
    settings = route(headers=["x-trace", "authorization"], maxBodyBytes=4, rolling="day")
    headers = [(b"X-Trace", b"t1"), (b"Authorization", b"Bearer secret"), (b"x-other", b"o")]
    wall = 1796220000.5  # 2026-12-02T14:00:00.5Z
    line, destination, deployment, partition = record_line(
        (settings, "ep", "blue", "2", "live", b"id-1", wall, 0.0123, 200, b"abcdef", headers, b"[1.5]")
    )
    record = CollectedRecord.model_validate(orjson.loads(line))
    assert line.endswith(b"\n") and b"secret" not in line
    assert (destination, deployment, partition) == ("/records", "blue", "ep/blue/2026/12/02")
    assert record.request is not None and record.request.headers == {"x-trace": "t1"}
    assert record.request.truncated and record.request.body == "abcd" and record.request.size == 6
    assert (record.requestId, record.modelVersion, record.latencyMs, record.time) == (
        "id-1", "2", 12.3, "2026-12-02T14:00:00.500Z",
    )  # fmt: skip


def test_a_record_queued_without_headers_keeps_none() -> None:
    # The router queues a request's header list only when its route keeps headers; a route that
    # lists only never-kept ones, or a record queued before the route's change, has None.
    wall = 1796220000.5
    for settings in (route(headers=["authorization"]), route(headers=["x-trace"])):
        line, *_ = record_line(
            (settings, "ep", "blue", "2", "live", b"id-1", wall, 0.01, 200, b"{}", None, b"[1]")
        )
        record = CollectedRecord.model_validate(orjson.loads(line))
        assert record.request is not None and record.request.headers == {}


def test_the_one_template_line_is_the_general_line_byte_for_byte() -> None:
    """Both bodies whole and UTF-8 take one bytes template; the rest is built field by field. A reader
    (mlendpoints compare) must not tell them apart: the same bytes as the field-by-field path."""
    rng = random.Random(3)
    bodies = [b"", b'{"a":"q\\"\\n"}', 'h\u00e9\n\t\x00"'.encode(), b"\xff\xfe", b'{"a":1}' * 20, b"text"]
    for _ in range(500):
        req, resp = rng.choice(bodies), rng.choice(bodies)
        wall, latency = 1796220000 + rng.random() * 1e5, rng.random() * 3
        rid = rng.choice([b"id-1", b'we"ird', b"\xe9"])
        fast = record_line((route(), "ep", "blue", None, "live", rid, wall, latency, 201, req, [], resp))
        # Headers kept (none present) send the same record down the field-by-field path.
        general = record_line(
            (route(headers=["x-none"]), "ep", "blue", None, "live", rid, wall, latency, 201, req, [], resp)
        )
        assert fast[0] == general[0].replace(b',"headers":{}', b""), (req, resp)
        record = orjson.loads(fast[0])
        assert (record["request"]["size"], record["response"]["size"]) == (len(req), len(resp))
        json.loads(fast[0])  # standard JSON too


def test_compare_answers_labels_numbers_and_shapes() -> None:
    same = compare_answers(b'{"predictions": [1.5, 2.0]}', '{"predictions": [1.5, 2.0]}')
    assert same.equal and same.numbers == 2 and same.abs_diff_max == 0.0
    numbers = compare_answers("[1.0, 2.0]", "[1.5, 1.0]")
    assert not numbers.equal and numbers.abs_diff_sum == 1.5 and numbers.abs_diff_max == 1.0
    labels = compare_answers(json.dumps(["a", 1, True]), json.dumps(["a", 2, True]))
    assert (labels.equal, labels.labels, labels.labels_equal, labels.numbers) == (False, 3, 2, 0)
    assert not compare_answers("[1, 2]", "[1, 2, 3]").equal  # shapes differ
    assert compare_answers(b"not json", b"not json").equal
    assert not compare_answers(b"not json", b"other").equal
    assert not compare_answers("[true]", "[1]").equal  # a boolean is not the integer 1


def test_the_record_schema_in_the_contract_document_is_the_models() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[3] / "docs" / "contract.md").read_text()
    block = text.split("<!-- collected-record-schema:", 1)[1].split("```json\n", 1)[1].split("\n```", 1)[0]
    documented = json.loads(block)
    documented.pop("$schema")
    documented.pop("$id")
    assert documented == CollectedRecord.model_json_schema()
