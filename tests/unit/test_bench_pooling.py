"""The router benchmark pools its rounds' latency distributions: pooled percentiles must be those of
all the rounds' requests taken together."""

from __future__ import annotations

import random

from bench.router import pooled_percentile


def _quantiles(samples: list[float]) -> list[float]:
    """What the benchmark's wrk script reports: the latency at every 0.1 percentile."""
    ordered = sorted(samples)
    return [ordered[min(len(ordered) - 1, round(len(ordered) * i / 1000) - 1)] for i in range(1, 1001)]


def test_pooled_percentiles_are_those_of_all_requests_together() -> None:
    rng = random.Random(7)
    rounds = [
        [rng.expovariate(1 / scale) for _ in range(n)] for scale, n in ((1.0, 4000), (3.0, 2000), (1.5, 5000))
    ]
    runs = [{"requests": len(r), "quantiles_us": _quantiles(r)} for r in rounds]
    everything = sorted(x for r in rounds for x in r)
    for percent in (50, 90, 99):
        exact = everything[round(len(everything) * percent / 100) - 1]
        # Each round is known to within 0.1 percentile, so the pooled value is off by at most that much.
        lower = everything[round(len(everything) * (percent - 0.1) / 100) - 1]
        upper = everything[round(len(everything) * (percent + 0.1) / 100) - 1]
        assert lower <= pooled_percentile(runs, percent) <= upper, (percent, exact)


def test_a_hiccup_in_one_round_shows_in_the_pooled_p99() -> None:
    # Four calm rounds and one with a hiccup: the pooled p99 sees the hiccup's share of requests.
    calm = [[1.0] * 990 + [2.0] * 10 for _ in range(4)]
    hiccup = [1.0] * 900 + [50.0] * 100
    runs = [{"requests": 1000, "quantiles_us": _quantiles(r)} for r in [*calm, hiccup]]
    assert pooled_percentile(runs, 50) == 1.0
    assert pooled_percentile(runs, 99) == 50.0  # 140 of 5,000 requests are slower than 1: 2.8%
