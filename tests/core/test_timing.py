"""ropelab.timing: warm-up left out, medians of the right numbers, peaks seen, the machine said."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

import numpy as np
import pytest

from ropelab import timing


class FakeClock:
    """perf_counter and process_time for the harness: time moves only when a call says."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", fake)
    monkeypatch.setattr(timing.time, "process_time", fake)
    return fake


def _costing(clock, durations):
    """A function whose n-th call takes durations[n] seconds of the fake clock."""
    it = iter(durations)

    def fn():
        clock.now += next(it)

    return fn


def test_warmup_is_left_out_and_the_median_is_of_the_timed_calls(clock):
    fn = _costing(clock, [100.0, 50.0, 5.0, 1.0, 3.0, 2.0, 4.0])
    got = timing.time_calls(fn, reps=5, warmup=2, name="f")
    assert got.seconds == (5.0, 1.0, 3.0, 2.0, 4.0)
    assert got.median == 3.0 and got.min == 1.0 and got.reps == 5 and got.warmup == 2
    assert got.cpu_seconds == got.seconds  # the fake clock serves both
    d = got.as_dict()
    assert d["median_ms"] == 3000.0 and d["min_ms"] == 1000.0 and d["seconds"] == [5.0, 1.0, 3.0, 2.0, 4.0]


def test_even_count_median_and_calls_per_repetition(clock):
    # 2 calls per repetition: each entry is their mean
    fn = _costing(clock, [9.0, 1.0, 3.0, 2.0, 4.0, 4.0, 6.0, 7.0, 9.0])
    got = timing.time_calls(fn, reps=4, warmup=1, calls=2)
    assert got.seconds == (2.0, 3.0, 5.0, 8.0) and got.calls == 2
    assert got.median == 4.0  # (3 + 5) / 2


def test_round_robin_interleaves_and_warms_each(clock):
    order = []

    def make(name, cost):
        def fn():
            order.append(name)
            clock.now += cost

        return fn

    got = timing.round_robin({"a": make("a", 1.0), "b": make("b", 2.0)}, reps=3, warmup=1)
    assert order == ["a", "b"] + ["a", "b"] * 3
    assert list(got) == ["a", "b"]
    assert got["a"].seconds == (1.0,) * 3 and got["b"].seconds == (2.0,) * 3


def test_a_function_slow_on_its_first_call_only():
    """Real clock: 0.3 s on the first call, nothing after. Warm-up hides it; without
    warm-up it is the first repetition."""
    state = {"first": True}

    def fn():
        if state["first"]:
            state["first"] = False
            time.sleep(0.3)

    warmed = timing.time_calls(fn, reps=5, warmup=1)
    assert max(warmed.seconds) < 0.1
    state["first"] = True
    cold = timing.time_calls(fn, reps=5, warmup=0)
    assert cold.seconds[0] >= 0.3 and statistics.median(cold.seconds) < 0.1


def test_sync_runs_around_every_repetition(clock):
    events = []
    fn = _costing(clock, [1.0] * 4)
    timing.time_calls(lambda: (events.append("call"), fn()), reps=3, warmup=1,
                      sync=lambda: events.append("sync"))
    assert events == ["call"] + ["sync", "call", "sync"] * 3


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="reps must be an integer >= 1, got 0"):
        timing.time_calls(lambda: None, reps=0)
    with pytest.raises(TypeError, match="warmup must be an integer"):
        timing.time_calls(lambda: None, reps=1, warmup=1.5)
    with pytest.raises(ValueError, match="calls"):
        timing.time_calls(lambda: None, reps=1, calls=0)
    with pytest.raises(TypeError, match="contender 'x' must be callable"):
        timing.round_robin({"x": 3}, reps=1)
    with pytest.raises(ValueError, match="at least one"):
        timing.round_robin({}, reps=1)
    with pytest.raises(ValueError, match="source must be one of"):
        timing.PeakMemory("disk")
    with pytest.raises(ValueError, match="module:function"):
        timing.run_isolated("ropelab.timing.machine")


def test_machine_line_says_cores_load_and_threads():
    info = timing.machine()
    assert info["cpus"] == os.cpu_count()
    if hasattr(os, "getloadavg"):
        assert len(info["load_average"]) == 3 and all(x >= 0 for x in info["load_average"])
    line = timing.machine_line(info)
    assert line.startswith(f"a {os.cpu_count()}-core CPU")
    assert "load average" in line
    line = timing.machine_line(dict(cpus=2, processor="x86_64", load_average=[3.5, 2.0, 1.25],
                                    torch="2.13.0", torch_threads=2))
    assert line == ("a 2-core CPU (x86_64), load average 3.50 / 2.00 / 1.25 (1, 5, 15 min), "
                    "torch 2.13.0 on 2 thread(s)")


def test_cuda_sync_only_for_cuda():
    assert timing.cuda_sync(np.ones(3), "cpu", None) is None
    assert timing.cuda_sync() is None


@pytest.mark.parametrize("source", ["rss", "python"])
def test_peak_memory_sees_a_freed_allocation(source):
    timing.unbuffer_malloc()
    with timing.PeakMemory(source) as mem:
        block = np.ones(64 << 20, dtype=np.uint8)  # 64 MiB, touched
        del block
    assert mem.bytes >= 32 << 20
    with timing.PeakMemory(source) as small:
        np.ones(1 << 10)
    assert small.bytes < 16 << 20


def test_high_water_mark_catches_what_sampling_misses():
    """A block larger than anything before sets a new high-water mark: seen even when the
    sampler sleeps through it."""
    code = (
        "import numpy as np\n"
        "from ropelab import timing\n"
        "timing.unbuffer_malloc()\n"
        "n = timing._max_rss_bytes() + (32 << 20)  # past the high-water mark, whatever it is\n"
        "with timing.PeakMemory('rss', interval=60.0) as mem:\n"
        "    block = np.ones(n, dtype=np.uint8)\n"
        "    del block\n"
        "print(n, mem.bytes)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    n, seen = map(int, done.stdout.split()[-2:])
    assert 0.9 * n <= seen <= 1.1 * n + (16 << 20)


def test_run_isolated_returns_the_result_or_the_error():
    assert timing.run_isolated("ropelab.checks:check_int", name="n", value=3, minimum=1) == 3
    assert timing.run_isolated("os:getpid") != os.getpid()  # a process of its own
    with pytest.raises(RuntimeError, match="n must be an integer >= 1, got 0"):
        timing.run_isolated("ropelab.checks:check_int", name="n", value=0, minimum=1)
