"""One timing harness for ``ropelab bench`` and the scripts in ``benchmarks/``.

- :func:`time_calls` and :func:`round_robin` time callables: warm-up calls first (never
  counted: JIT compilation, lazy imports, allocator pools and cold caches are one-time
  costs), then ``reps`` timed repetitions of ``calls`` calls each; a :class:`Timing` holds
  the seconds per call of every repetition, with its median and min. ``round_robin``
  interleaves the contenders repetition by repetition, so drift in the machine's load
  falls on all of them alike.
- :class:`PeakMemory` measures the peak memory of a block above the level at its start:
  the resident set size on the CPU, torch's allocator on CUDA, or tracemalloc.
- :func:`run_isolated` runs a measurement in a fresh Python process (a peak of its own,
  no thread pools or caches left by earlier contenders), with JSON in and out.
- :func:`machine` and :func:`machine_line` describe what the numbers were measured on:
  cores, load average, torch's threads.

Numpy and the standard library only at import; torch is imported only to synchronise a
CUDA device (:func:`cuda_sync`) or to read its allocator, when a CUDA tensor is involved.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from .checks import check_choice, check_float, check_int

__all__ = [
    "PeakMemory",
    "Timing",
    "available_memory",
    "cuda_sync",
    "machine",
    "machine_line",
    "round_robin",
    "rss_bytes",
    "run_isolated",
    "time_calls",
    "unbuffer_malloc",
]


@dataclass(frozen=True)
class Timing:
    """Seconds per call of one contender, one entry per timed repetition (warm-up excluded).

    ``cpu_seconds`` is this process's CPU time per call (all its threads together): on a
    shared machine other processes inflate the wall time but not this.
    """

    name: str
    seconds: tuple[float, ...]
    cpu_seconds: tuple[float, ...] = ()
    warmup: int = 0  # calls made before timing
    calls: int = 1  # calls per repetition; each entry of ``seconds`` is their mean

    @property
    def reps(self) -> int:
        return len(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def min(self) -> float:
        return min(self.seconds)

    @property
    def cpu_median(self) -> float | None:
        return statistics.median(self.cpu_seconds) if self.cpu_seconds else None

    def __str__(self) -> str:
        return (f"{self.name}: median {_pretty(self.median)}, min {_pretty(self.min)} "
                f"({self.reps} x {self.calls} call(s) after {self.warmup} warm-up)")

    def as_dict(self) -> dict:
        """Plain numbers for JSON: medians and mins in ms, the repetitions in seconds."""
        out = dict(name=self.name, median_ms=self.median * 1e3, min_ms=self.min * 1e3,
                   reps=self.reps, calls=self.calls, warmup=self.warmup, seconds=list(self.seconds))
        if self.cpu_seconds:
            out["cpu_median_ms"] = self.cpu_median * 1e3
        return out


def _pretty(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3g} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} us"


def _check_counts(reps, warmup, calls) -> tuple[int, int, int]:
    return (check_int("reps", reps, minimum=1), check_int("warmup", warmup, minimum=0),
            check_int("calls", calls, minimum=1))


def _timed(fn: Callable[[], object], calls: int, sync) -> tuple[float, float]:
    """(wall, cpu) seconds per call over ``calls`` calls, the device drained at both ends."""
    if sync is not None:
        sync()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(calls):
        fn()
    if sync is not None:
        sync()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return wall / calls, cpu / calls


def time_calls(fn: Callable[[], object], *, reps: int, warmup: int = 1, calls: int = 1,
               sync: Callable[[], object] | None = None, name: str = "") -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then ``reps`` repetitions of ``calls`` calls.

    ``sync`` (e.g. ``torch.cuda.synchronize``, see :func:`cuda_sync`) is called before and
    after each repetition so asynchronous device work is counted where it is launched.
    Several ``calls`` per repetition suit microsecond-scale functions (decode steps), whose
    single calls the clock and the device synchronisation would distort.
    """
    return round_robin({name: fn}, reps=reps, warmup=warmup, calls=calls, sync=sync)[name]


def round_robin(contenders: Mapping[str, Callable[[], object]], *, reps: int, warmup: int = 1,
                calls: int = 1, sync: Callable[[], object] | None = None) -> dict[str, Timing]:
    """Time each contender like :func:`time_calls`, interleaved: every repetition times
    each contender once, in turn, so a change in the machine's load hits them all alike.

    Returns name -> :class:`Timing`, in the contenders' order.
    """
    reps, warmup, calls = _check_counts(reps, warmup, calls)
    if not contenders:
        raise ValueError("contenders must name at least one function to time, got none")
    for name, fn in contenders.items():
        if not callable(fn):
            raise TypeError(f"contender {name!r} must be callable, got {type(fn).__name__}")
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    wall: dict[str, list[float]] = {name: [] for name in contenders}
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(reps):
        for name, fn in contenders.items():
            w, c = _timed(fn, calls, sync)
            wall[name].append(w)
            cpu[name].append(c)
    return {name: Timing(name, tuple(wall[name]), tuple(cpu[name]), warmup, calls) for name in contenders}


def _device_type(thing) -> str | None:
    device = getattr(thing, "device", thing)
    kind = getattr(device, "type", None)
    if kind is None and isinstance(device, str):
        kind = device.split(":")[0]
    return kind if isinstance(kind, str) else None


def cuda_sync(*things) -> Callable[[], None] | None:
    """``torch.cuda.synchronize`` when any of ``things`` (torch tensors, devices or device
    names such as ``"cuda:0"``) is on a CUDA device, else None (CPU work is synchronous)."""
    if any(_device_type(t) == "cuda" for t in things):
        import torch

        return torch.cuda.synchronize
    return None


# -- memory ------------------------------------------------------------------------------


def rss_bytes() -> int | None:
    """This process's resident set size now (Linux ``/proc``; None where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def _max_rss_bytes() -> int | None:
    """The kernel's high-water mark of this process's resident set size."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def unbuffer_malloc() -> None:
    """Make glibc map (and unmap on free) every block >= 1 MiB, so the resident set tracks
    the live arrays; otherwise freed blocks stay resident and hide later peaks. Call it
    first, before the allocations to be measured (a no-op off glibc)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD (fixing it also stops its growth)
        libc.mallopt(-1, 1 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def available_memory(default: int = 8 << 30) -> int:
    """Bytes of memory available to new allocations (``MemAvailable``), or ``default``."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return default


class PeakMemory:
    """Peak memory while the block runs, above the level at its start: ``.bytes`` after it.

    ``source``:

    - ``"rss"`` (the default on the CPU): this process's resident set size, sampled every
      ``interval`` seconds by a thread, and the kernel's high-water mark, which is exact
      whenever the block sets a new high (always the case for the first large pass in a
      fresh process, see :func:`run_isolated`). Call :func:`unbuffer_malloc` first so
      freed memory leaves the resident set.
    - ``"cuda"`` (the default for a CUDA ``device``): torch's allocator,
      ``max_memory_allocated`` minus ``memory_allocated`` at the start.
    - ``"python"``: tracemalloc (Python objects and numpy arrays; not torch's CPU tensors).
    """

    SOURCES = ("rss", "cuda", "python")

    def __init__(self, source: str | None = None, *, device=None, interval: float = 0.0005):
        if source is None:
            source = "cuda" if _device_type(device) == "cuda" else "rss"
        self.source = check_choice("source", source, self.SOURCES)
        self.device = device
        self.interval = check_float("interval", interval, above=0.0)
        self.bytes: int | None = None

    def __enter__(self) -> PeakMemory:
        self.bytes = None
        if self.source == "cuda":
            import torch

            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        elif self.source == "python":
            self._started = not tracemalloc.is_tracing()
            if self._started:
                tracemalloc.start()
            tracemalloc.reset_peak()
            self._base = tracemalloc.get_traced_memory()[0]
        else:
            self._base = rss_bytes()
            self._high_before = _max_rss_bytes()
            self._peak = self._base or 0
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while True:
            self._peak = max(self._peak, rss_bytes() or 0)
            if self._stop.wait(self.interval):
                return

    def __exit__(self, *exc) -> None:
        if self.source == "cuda":
            import torch

            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.source == "python":
            peak = tracemalloc.get_traced_memory()[1]
            if self._started:
                tracemalloc.stop()
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, rss_bytes() or 0)
            high = _max_rss_bytes()
            if high is not None and self._high_before is not None and high > self._high_before:
                peak = max(peak, high)  # a new high-water mark was set inside the block
            if self._base is None:  # no /proc: only a new high-water mark says anything
                self._base = self._high_before or 0
        self.bytes = max(0, int(peak) - int(self._base))


# -- a fresh process ---------------------------------------------------------------------

_MARK = "ropelab-isolated-result "
_CHILD = """
import importlib, json, sys
sys.path[:] = [p for p in sys.path if p not in ("", ".")]  # no module of the working folder shadows ours
module, _, function = sys.argv[1].partition(":")
result = getattr(importlib.import_module(module), function)(**json.loads(sys.argv[2]))
sys.stdout.write("\\n" + sys.argv[3] + json.dumps(result) + "\\n")
"""


def run_isolated(target: str, /, *, timeout: float | None = None, **kwargs):
    """``module:function`` called with ``kwargs`` in a fresh Python process; its result.

    Arguments and result travel as JSON. The child sees the same ``sys.path`` (the same
    ropelab); its memory high-water mark and thread pools are its own. Raises
    RuntimeError with the end of the child's stderr when it fails.
    """
    if not isinstance(target, str) or ":" not in target:
        raise ValueError(f"target must be 'module:function', got {target!r}")
    env = dict(os.environ)
    paths = [p for p in sys.path if p]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    done = subprocess.run([sys.executable, "-c", _CHILD, target, json.dumps(kwargs), _MARK],
                          capture_output=True, text=True, timeout=timeout, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith(_MARK)]
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"{target} failed in its own process (exit {done.returncode}): {tail}")
    return json.loads(lines[-1][len(_MARK):])


# -- the machine -------------------------------------------------------------------------


def machine(device=None) -> dict:
    """What a measurement ran on: cores, load average (1, 5, 15 min), processor, versions,
    torch's threads (when torch is loaded) and the GPU's name for a CUDA ``device``."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    info = dict(cpus=os.cpu_count(), usable_cpus=usable, load_average=load,
                processor=platform.processor() or platform.machine(),
                python=platform.python_version(), numpy=np.__version__)
    torch = sys.modules.get("torch")
    if torch is not None:
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
        if _device_type(device) == "cuda":
            info["gpu"] = torch.cuda.get_device_name(device)
    return info


def machine_line(info: dict | None = None) -> str:
    """One line for a report: ``a 2-core CPU (x86_64), load average 1.5 / 1.6 / 1.9, ...``."""
    info = machine() if info is None else info
    text = f"a {info.get('cpus')}-core CPU ({info.get('processor')})"
    if info.get("usable_cpus") not in (None, info.get("cpus")):
        text += f", {info['usable_cpus']} cores usable here"
    load = info.get("load_average")
    if load:
        text += f", load average {' / '.join(f'{x:.2f}' for x in load)} (1, 5, 15 min)"
    if info.get("torch"):
        text += f", torch {info['torch']} on {info.get('torch_threads')} thread(s)"
    if info.get("gpu"):
        text += f", GPU {info['gpu']}"
    return text
