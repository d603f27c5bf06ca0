"""Request deadlines with one timer: late requests are cancelled (and know it), others are not."""

from __future__ import annotations

import asyncio

from mlendpoints_serving.server.deadlines import Deadlines


def test_a_request_past_its_deadline_is_cancelled_and_one_in_time_is_not() -> None:
    deadlines = Deadlines(timeout_s=0.05, resolution_s=0.01)

    async def request(seconds: float) -> str:
        deadline = deadlines.start()
        try:
            await asyncio.sleep(seconds)
            return "answered"
        except asyncio.CancelledError:
            assert deadline.expired
            task = asyncio.current_task()
            assert task is not None
            task.uncancel()
            return "timed out"
        finally:
            deadline.done = True

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
                deadline.done = True
                seen.append(deadline.expired)

        seen: list[bool] = []
        task = asyncio.ensure_future(request())
        await asyncio.sleep(0.01)
        task.cancel()  # e.g. the server shutting down
        await asyncio.gather(task, return_exceptions=True)
        return seen == [False] and task.cancelled()

    assert asyncio.run(go())
