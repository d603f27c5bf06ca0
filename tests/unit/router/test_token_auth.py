"""authMode token: the reviews asked, the cache (TTLs, bound, by token hash), one shared in-flight review,
and the router's answers (401/403/503 with a JSON reason). The API server here is a recording stand-in;
tests/integration/test_router_token_auth.py runs the same against the real one."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import orjson

from mlendpoints_serving.contract import (
    REASON_TOKEN_FORBIDDEN,
    REASON_TOKEN_INVALID,
    REASON_TOKEN_MISSING,
    REASON_TOKEN_REVIEW_UNAVAILABLE,
    TOKEN_ALLOWED_TTL_S,
    TOKEN_DENIED_TTL_S,
    RouterConfig,
)
from mlendpoints_serving.router.auth import KeyChecker
from mlendpoints_serving.router.metrics import RouterMetrics
from mlendpoints_serving.router.service import Request, Router
from mlendpoints_serving.router.state import RoutingState
from mlendpoints_serving.router.tokenauth import (
    SAR_PATH,
    TOKEN_REVIEW_PATH,
    Outcome,
    TokenChecker,
    token_hash,
)
from mlendpoints_serving.router.upstream import UpstreamPool

USER = {
    "username": "system:serviceaccount:team:scorer",
    "uid": "u-1",
    "groups": ["system:serviceaccounts", "system:serviceaccounts:team"],
    "extra": {"authentication.kubernetes.io/pod-name": ["p"]},
}


class ApiServer:
    """Answers TokenReviews from `users` (token -> user) and SARs from `allowed` (usernames)."""

    def __init__(self, allowed: set[str] | None = None, fail: bool = False) -> None:
        self.users = {"good": USER, "other": {**USER, "username": "system:serviceaccount:team:other"}}
        self.allowed = allowed if allowed is not None else {USER["username"]}
        self.fail = fail
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.gate: threading.Event | None = None

    def create_review(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.gate is not None:
            assert self.gate.wait(5)
        self.calls.append((path, body))
        if self.fail:
            raise ConnectionRefusedError("connection refused")
        if path == TOKEN_REVIEW_PATH:
            user = self.users.get(body["spec"]["token"])
            return {"status": {"authenticated": True, "user": user} if user else {"error": "invalid bearer"}}
        assert path == SAR_PATH
        allowed = body["spec"]["user"] in self.allowed
        return {"status": {"allowed": allowed, **({} if allowed else {"reason": "no rule"})}}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def check(checker: TokenChecker, header: bytes | None, endpoint: str = "ep") -> Outcome:
    return asyncio.run(checker.check(header, "team", endpoint)).outcome


def test_review_asks_for_create_on_the_endpoints_score_subresource_as_the_tokens_identity() -> None:
    api = ApiServer()
    assert check(TokenChecker(api), b"Bearer good") is Outcome.ALLOWED
    (review_path, review), (sar_path, sar) = api.calls
    assert review_path == TOKEN_REVIEW_PATH and review["spec"] == {"token": "good"}
    assert sar_path == SAR_PATH and sar["kind"] == "SubjectAccessReview"
    assert sar["spec"] == {
        "user": USER["username"],
        "groups": USER["groups"],
        "uid": "u-1",
        "extra": USER["extra"],
        "resourceAttributes": {
            "group": "mlendpoints.io",
            "resource": "onlineendpoints",
            "subresource": "score",
            "verb": "create",
            "namespace": "team",
            "name": "ep",
        },
    }


def test_outcomes_missing_invalid_forbidden_unavailable() -> None:
    api = ApiServer()
    checker = TokenChecker(api)
    assert check(checker, None) is Outcome.MISSING
    assert check(checker, b"Basic good") is Outcome.MISSING
    assert check(checker, b"Bearer ") is Outcome.MISSING
    assert api.calls == []  # no token: nothing asked
    assert check(checker, b"Bearer garbage") is Outcome.UNAUTHENTICATED
    assert check(checker, b"bearer other") is Outcome.FORBIDDEN
    assert check(TokenChecker(ApiServer(fail=True)), b"Bearer good") is Outcome.UNAVAILABLE
    assert check(TokenChecker(None), b"Bearer good") is Outcome.UNAVAILABLE  # file mode: no API


def test_answers_are_cached_allowed_10s_denied_5s_by_token_hash() -> None:
    assert (TOKEN_ALLOWED_TTL_S, TOKEN_DENIED_TTL_S) == (10.0, 5.0)
    api, clock = ApiServer(), Clock()
    checker = TokenChecker(api, clock=clock)
    for _ in range(5):
        assert check(checker, b"Bearer good") is Outcome.ALLOWED
        assert check(checker, b"Bearer other") is Outcome.FORBIDDEN
        assert check(checker, b"Bearer garbage") is Outcome.UNAUTHENTICATED
    assert checker.reviews == 3
    # The cache never holds a token, only its hash.
    assert {key[0] for key in checker._cache} == {token_hash(t) for t in (b"good", b"other", b"garbage")}
    assert not any(t in repr(checker._cache.keys()) for t in ("good", "other", "garbage"))
    clock.now += TOKEN_DENIED_TTL_S + 0.1  # the denials expire, the allowed answer stays
    api.allowed.add("system:serviceaccount:team:other")  # a grant made meanwhile shows now
    assert check(checker, b"Bearer good") is Outcome.ALLOWED
    assert checker.reviews == 3  # still cached
    assert check(checker, b"Bearer other") is Outcome.ALLOWED
    assert check(checker, b"Bearer garbage") is Outcome.UNAUTHENTICATED
    assert checker.reviews == 5
    clock.now += TOKEN_ALLOWED_TTL_S  # and a revoked grant stops working once the allowed answer expires
    api.allowed.clear()
    assert check(checker, b"Bearer good") is Outcome.FORBIDDEN


def test_each_endpoint_is_reviewed_on_its_own() -> None:
    api = ApiServer()
    checker = TokenChecker(api)
    assert check(checker, b"Bearer good", "a") is Outcome.ALLOWED
    assert check(checker, b"Bearer good", "b") is Outcome.ALLOWED
    assert checker.reviews == 2


def test_unavailable_is_never_cached() -> None:
    api = ApiServer(fail=True)
    checker = TokenChecker(api)
    assert check(checker, b"Bearer good") is Outcome.UNAVAILABLE
    api.fail = False
    assert check(checker, b"Bearer good") is Outcome.ALLOWED
    assert checker.reviews == 2


def test_the_cache_is_bounded_oldest_out_first() -> None:
    api = ApiServer()
    api.users.update({f"t{i}": USER for i in range(5)})
    checker = TokenChecker(api, max_entries=3)
    for i in range(5):
        check(checker, f"Bearer t{i}".encode())
    assert len(checker) == 3
    reviews = checker.reviews
    check(checker, b"Bearer t4")  # kept
    assert checker.reviews == reviews
    check(checker, b"Bearer t0")  # evicted: reviewed again
    assert checker.reviews == reviews + 1


def test_concurrent_identical_lookups_share_one_review() -> None:
    api = ApiServer()
    api.gate = threading.Event()
    checker = TokenChecker(api)

    async def scenario() -> list[Outcome]:
        tasks = [asyncio.create_task(checker.check(b"Bearer good", "team", "ep")) for _ in range(50)]
        await asyncio.sleep(0.05)
        assert api.gate is not None
        api.gate.set()
        return [v.outcome for v in await asyncio.gather(*tasks)]

    assert asyncio.run(scenario()) == [Outcome.ALLOWED] * 50
    assert checker.reviews == 1 and len(api.calls) == 2


def test_the_event_loop_keeps_running_during_a_review() -> None:
    api = ApiServer()
    api.gate = threading.Event()
    checker = TokenChecker(api)

    async def scenario() -> Outcome:
        task = asyncio.create_task(checker.check(b"Bearer good", "team", "ep"))
        await asyncio.sleep(0.05)  # the loop runs while the review waits in its thread
        assert not task.done()
        assert api.gate is not None
        api.gate.set()
        return (await task).outcome

    assert asyncio.run(scenario()) is Outcome.ALLOWED


def router_answer(
    api: ApiServer | None, header: bytes | None
) -> tuple[int, dict[str, Any], dict[bytes, bytes]]:
    config = RouterConfig(endpoint="ep", namespace="team", authMode="token")
    router = Router(
        RoutingState(config), KeyChecker(), UpstreamPool(), RouterMetrics(), tokens=TokenChecker(api)
    )
    request = Request(b"POST", b"/score", [], b"{}", authorization=header)
    response = asyncio.run(router.handle(request))
    return response.status, orjson.loads(response.body), dict(response.headers)


def test_router_answers_401_403_503_with_a_json_reason() -> None:
    status, body, headers = router_answer(ApiServer(), None)
    assert status == 401 and body["error"]["code"] == REASON_TOKEN_MISSING
    assert headers[b"www-authenticate"] == b"Bearer"
    status, body, _ = router_answer(ApiServer(), b"Bearer garbage")
    assert status == 401 and body["error"]["code"] == REASON_TOKEN_INVALID
    assert "invalid bearer" in body["error"]["message"]
    status, body, _ = router_answer(ApiServer(), b"Bearer other")
    assert status == 403 and body["error"]["code"] == REASON_TOKEN_FORBIDDEN
    assert "system:serviceaccount:team:other" in body["error"]["message"]
    assert "onlineendpoints/score" in body["error"]["message"]
    status, body, headers = router_answer(ApiServer(fail=True), b"Bearer good")
    assert status == 503 and body["error"]["code"] == REASON_TOKEN_REVIEW_UNAVAILABLE
    assert headers[b"retry-after"] == b"1"
    # Allowed: past auth, to routing (no deployment here: 503 no_ready_pod, not an auth error).
    status, body, _ = router_answer(ApiServer(), b"Bearer good")
    assert status == 503 and body["error"]["code"] == "no_ready_pod"
