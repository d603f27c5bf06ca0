"""The model server's settings: derived defaults."""

from __future__ import annotations

from pathlib import Path

from mlendpoints_serving.server.settings import ServeSettings


def test_stuck_limit_is_twice_the_request_timeout_and_at_least_30_s() -> None:
    def stuck(**kwargs: object) -> float:
        return ServeSettings(model_dir=Path("/m"), workers=1, **kwargs).stuck_prediction_s  # type: ignore[arg-type]

    assert stuck() == 120.0  # the default request timeout, 60 s
    assert stuck(request_timeout_ms=5_000) == 30.0
    assert stuck(request_timeout_ms=45_000) == 90.0
    assert stuck(request_timeout_ms=5_000, stuck_after_s=3) == 3.0
    assert stuck(stuck_after_s=0) == 0.0  # never
