"""The benchmark's arithmetic: percentiles, rates and the command line."""

from __future__ import annotations

import math

from mlopskit.bench import LoadResult, parse_args


def test_p95_is_the_value_below_which_95_percent_of_latencies_fall() -> None:
    result = LoadResult(ok=100, errors=0, seconds=1.0, latencies_ms=[float(v) for v in range(100, 0, -1)])
    assert result.p95_ms == 95.0


def test_p95_of_a_single_request_is_its_latency() -> None:
    assert LoadResult(ok=1, errors=0, seconds=1.0, latencies_ms=[12.5]).p95_ms == 12.5


def test_p95_without_successful_requests_is_infinite() -> None:
    assert math.isinf(LoadResult(ok=0, errors=3, seconds=1.0, latencies_ms=[]).p95_ms)


def test_rate_counts_only_successful_requests() -> None:
    assert LoadResult(ok=50, errors=10, seconds=2.0, latencies_ms=[1.0] * 50).rate == 25.0


def test_command_line_defaults_bound_the_load() -> None:
    args = parse_args([])
    assert (args.clients, args.requests, args.max_seconds) == (8, 150, 60.0)
    assert not (args.skip_size or args.skip_throughput or args.skip_up)
