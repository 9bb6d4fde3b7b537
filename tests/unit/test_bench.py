"""The benchmark's arithmetic: percentiles, rates and the command line."""

from __future__ import annotations

import math
from typing import Any

import pytest

from mlopskit.bench import LoadResult, container_cpu_seconds, container_memory, parse_args, spread


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
    assert (args.clients, args.requests, args.max_seconds, args.rounds, args.up_runs) == (8, 150, 60.0, 3, 3)
    assert not (args.skip_size or args.skip_throughput or args.skip_up)


@pytest.mark.parametrize("option", ["--clients", "--requests", "--rounds", "--up-runs"])
def test_a_count_below_one_is_refused_with_its_option(option: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args([option, "0"])
    assert f"{option} must be at least 1" in capsys.readouterr().err


def test_spread_gives_the_median_and_the_range_of_repeated_runs() -> None:
    assert spread([12.0, 30.5, 14.25], "s") == "median 14.2 s (12.0-30.5 over 3 runs)"
    assert spread([0.93], "x", 2) == "0.93 x (1 run)"


class StatsContainer:
    """Answers `stats` with the JSON shape Docker's API documents for cgroup v1 or v2."""

    def __init__(self, memory_stats: dict[str, Any]) -> None:
        self.memory_stats = memory_stats

    def stats(self, **_: Any) -> dict[str, Any]:
        return {"memory_stats": self.memory_stats}


@pytest.mark.parametrize("key", ["inactive_file", "total_inactive_file"])  # cgroup v2, v1
def test_container_memory_leaves_out_inactive_page_cache_as_docker_stats_does(key: str) -> None:
    container = StatsContainer({"usage": 500 * 2**20, "stats": {key: 100 * 2**20}})
    assert container_memory(container) == 400 * 2**20


def test_container_cpu_is_read_from_dockers_cumulative_usage_in_seconds() -> None:
    class Container:
        def stats(self, stream: bool, one_shot: bool) -> dict[str, object]:
            assert (stream, one_shot) == (False, True)
            return {"cpu_stats": {"cpu_usage": {"total_usage": 2_500_000_000}}}

    assert container_cpu_seconds(Container()) == 2.5
