"""Token auth: a Kubernetes bearer token, checked by the API server (TokenReview), then authorised by it
(SubjectAccessReview: may this identity `create` onlineendpoints/score of this endpoint?).

Answers are cached by a hash of the token (never the token itself), allowed ones TOKEN_ALLOWED_TTL_S,
denied ones TOKEN_DENIED_TTL_S, at most TOKEN_CACHE_SIZE entries (oldest evicted first): the request
path is a dict lookup on a hit. Concurrent requests with the same token share one in-flight review.
An API server that cannot answer gives `unavailable` (the router answers 503), never a pass, and that
outcome is not cached.

The reviews themselves are blocking calls of the synchronous kubernetes client (the one the watches
use), run in a thread so the event loop never waits on the API server.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from mlendpoints_serving.contract import (
    SCORE_API_GROUP,
    SCORE_RESOURCE,
    SCORE_SUBRESOURCE,
    SCORE_VERB,
    TOKEN_ALLOWED_TTL_S,
    TOKEN_CACHE_SIZE,
    TOKEN_DENIED_TTL_S,
)

log = logging.getLogger("mlendpoints.router.auth")


class Outcome(enum.Enum):
    ALLOWED = "allowed"
    MISSING = "missing"  # no bearer token: 401
    UNAUTHENTICATED = "unauthenticated"  # TokenReview said no: 401
    FORBIDDEN = "forbidden"  # SubjectAccessReview said no: 403
    UNAVAILABLE = "unavailable"  # the API server could not answer: 503, not cached


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    # Why, for the client's error body: the identity (never the token) and the API server's reason.
    message: str = ""


class ReviewApi(Protocol):
    """POSTs a review object, returns the API server's answer (raises when it cannot answer)."""

    def create_review(self, path: str, body: dict[str, Any]) -> dict[str, Any]: ...


TOKEN_REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"
SAR_PATH = "/apis/authorization.k8s.io/v1/subjectaccessreviews"


def bearer_token(authorization: bytes | None) -> bytes | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(b" ")
    token = token.strip()
    return token if scheme.lower() == b"bearer" and token else None


def token_hash(token: bytes) -> str:
    return hashlib.sha256(token).hexdigest()


def review(api: ReviewApi, token: str, namespace: str, endpoint: str) -> Verdict:
    """TokenReview, then SubjectAccessReview for the identity it returns (blocking)."""
    answer = api.create_review(
        TOKEN_REVIEW_PATH,
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}},
    )
    status = answer.get("status") or {}
    if not status.get("authenticated"):
        reason = status.get("error") or "the API server did not authenticate it"
        return Verdict(Outcome.UNAUTHENTICATED, f"invalid or expired token: {reason}")
    user = status.get("user") or {}
    username = user.get("username", "")
    spec: dict[str, Any] = {
        "user": username,
        "groups": user.get("groups") or [],
        "resourceAttributes": {
            "group": SCORE_API_GROUP,
            "resource": SCORE_RESOURCE,
            "subresource": SCORE_SUBRESOURCE,
            "verb": SCORE_VERB,
            "namespace": namespace,
            "name": endpoint,
        },
    }
    if user.get("uid"):
        spec["uid"] = user["uid"]
    if user.get("extra"):
        spec["extra"] = user["extra"]
    answer = api.create_review(
        SAR_PATH, {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}
    )
    status = answer.get("status") or {}
    if status.get("allowed") and not status.get("denied"):
        return Verdict(Outcome.ALLOWED)
    why = status.get("reason") or status.get("evaluationError") or "no RBAC rule grants it"
    message = (
        f"{username!r} may not {SCORE_VERB} {SCORE_RESOURCE}/{SCORE_SUBRESOURCE} "
        f"({SCORE_API_GROUP}) of {namespace}/{endpoint}: {why}"
    )
    return Verdict(Outcome.FORBIDDEN, message)


class TokenChecker:
    """The router's token auth: cache, shared in-flight reviews, reviews in a thread."""

    def __init__(
        self,
        api: ReviewApi | None,
        namespace: str = "",
        allowed_ttl_s: float = TOKEN_ALLOWED_TTL_S,
        denied_ttl_s: float = TOKEN_DENIED_TTL_S,
        max_entries: int = TOKEN_CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.namespace = namespace  # the router's, when its config names none
        self.allowed_ttl_s = allowed_ttl_s
        self.denied_ttl_s = denied_ttl_s
        self.max_entries = max_entries
        self._clock = clock
        # (token hash, namespace, endpoint) -> (expires at, verdict), oldest first
        self._cache: OrderedDict[tuple[str, str, str], tuple[float, Verdict]] = OrderedDict()
        self._in_flight: dict[tuple[str, str, str], asyncio.Future[Verdict]] = {}
        self.reviews = 0  # reviews made (not cache hits): tests and metrics

    def __len__(self) -> int:
        return len(self._cache)

    async def check(self, authorization: bytes | None, namespace: str, endpoint: str) -> Verdict:
        token = bearer_token(authorization)
        if token is None:
            return Verdict(Outcome.MISSING, "no bearer token; send 'Authorization: Bearer <token>'")
        key = (token_hash(token), namespace, endpoint)
        cached = self._cache.get(key)
        if cached is not None:
            if cached[0] > self._clock():
                return cached[1]
            del self._cache[key]
        pending = self._in_flight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            verdict = await self._review(token.decode("latin-1"), namespace, endpoint)
        except BaseException:  # cancelled: the requests sharing it get 503, not a hang
            future.set_result(Verdict(Outcome.UNAVAILABLE, "the review was cancelled"))
            raise
        else:
            self._remember(key, verdict)
            future.set_result(verdict)
        finally:
            del self._in_flight[key]
        return verdict

    async def _review(self, token: str, namespace: str, endpoint: str) -> Verdict:
        if self.api is None:
            return Verdict(Outcome.UNAVAILABLE, "token auth needs the Kubernetes API (cluster mode)")
        self.reviews += 1
        try:
            return await asyncio.to_thread(review, self.api, token, namespace, endpoint)
        except Exception as exc:  # unreachable, 5xx, a 403 on the review itself: never let it in
            # The exception text is the API server's, never the token (it travels in the body only).
            log.warning("token review failed: %s: %s", type(exc).__name__, _short(exc))
            return Verdict(Outcome.UNAVAILABLE, "the Kubernetes API server could not review the token")

    def _remember(self, key: tuple[str, str, str], verdict: Verdict) -> None:
        if verdict.outcome is Outcome.ALLOWED:
            ttl = self.allowed_ttl_s
        elif verdict.outcome in (Outcome.UNAUTHENTICATED, Outcome.FORBIDDEN):
            ttl = self.denied_ttl_s
        else:
            return
        if ttl <= 0:
            return
        self._cache[key] = (self._clock() + ttl, verdict)
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)


def _short(exc: Exception) -> str:
    text = str(getattr(exc, "reason", None) or exc)
    return text.splitlines()[0][:200] if text else ""
