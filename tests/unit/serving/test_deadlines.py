"""Request deadlines with one timer: late requests are cancelled (and know it), others are not."""

from __future__ import annotations

import asyncio

import pytest

from mlendpoints_serving.server import deadlines as deadlines_module
from mlendpoints_serving.server.deadlines import Deadlines


def test_a_request_past_its_deadline_is_cancelled_and_one_in_time_is_not() -> None:
    deadlines = Deadlines(timeout_s=0.05, resolution_s=0.01)

    async def request(seconds: float) -> str:
        deadline = deadlines.start()
        try:
            await asyncio.sleep(seconds)
            return "answered"
        except asyncio.CancelledError:
            assert deadlines.expired(deadline)
            task = asyncio.current_task()
            assert task is not None
            task.uncancel()
            return "timed out"
        finally:
            deadlines.end(deadline)

    async def go() -> tuple[list[str], bool]:
        answers = await asyncio.gather(request(0.0), request(0.5), request(0.01), request(0.5))
        await asyncio.sleep(0.05)
        return answers, deadlines._timer is None  # idle: no timer left running

    answers, idle = asyncio.run(go())
    assert answers == ["answered", "timed out", "answered", "timed out"]
    assert idle


def test_a_cancel_that_is_not_the_deadline_is_not_marked_expired() -> None:
    deadlines = Deadlines(timeout_s=10.0)

    async def go() -> bool:
        async def request() -> None:
            deadline = deadlines.start()
            try:
                await asyncio.sleep(5)
            finally:
                seen.append(deadlines.expired(deadline))
                deadlines.end(deadline)

        seen: list[bool] = []
        task = asyncio.ensure_future(request())
        await asyncio.sleep(0.01)
        task.cancel()  # e.g. the server shutting down
        await asyncio.gather(task, return_exceptions=True)
        return seen == [False] and task.cancelled()

    assert asyncio.run(go())


def test_a_request_is_cancelled_no_sooner_than_its_deadline_and_at_most_two_periods_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a clock of the test's own, sweeps called by hand (the real timer, 10 s away, never fires)."""
    now = [0.0]
    monkeypatch.setattr(deadlines_module.time, "monotonic", lambda: now[0])
    deadlines = Deadlines(timeout_s=100.0, resolution_s=10.0)

    async def go() -> list[tuple[float, list[str]]]:
        gates: dict[str, asyncio.Event] = {}

        async def request(name: str) -> str:
            deadline = deadlines.start()
            try:
                await gates.setdefault(name, asyncio.Event()).wait()
                return "answered"
            except asyncio.CancelledError:
                assert deadlines.expired(deadline)
                return "timed out"
            finally:
                deadlines.end(deadline)

        tasks: dict[str, asyncio.Task[str]] = {}

        async def begin(name: str, at: float) -> None:
            now[0] = at
            tasks[name] = asyncio.ensure_future(request(name))
            await asyncio.sleep(0)  # it runs to its wait: started at `at`

        seen = []

        async def sweep(at: float) -> None:
            now[0] = at
            deadlines._sweep()
            await asyncio.sleep(0)  # the cancelled ones finish
            seen.append((at, sorted(n for n, t in tasks.items() if t.done() and t.result() == "timed out")))

        await begin("a", 0.0)  # deadline 100
        await begin("answered in time", 1.0)
        await sweep(10.0)
        await begin("b", 15.0)  # deadline 115
        gates["answered in time"].set()
        await sweep(20.0)
        for at in (99.0, 105.0, 110.0, 114.0, 120.0, 135.0):
            await sweep(at)
        assert tasks["answered in time"].result() == "answered"
        assert deadlines._timer is None  # nothing in flight: no sweeps
        return seen

    seen = asyncio.run(go())
    # Never before the deadline (a at 99, b at 114); at most 2 periods (20) after it (a by 120, b by 135).
    assert seen == [
        (10.0, []),
        (20.0, []),
        (99.0, []),
        (105.0, []),
        (110.0, ["a"]),
        (114.0, ["a"]),
        (120.0, ["a", "b"]),
        (135.0, ["a", "b"]),
    ]
