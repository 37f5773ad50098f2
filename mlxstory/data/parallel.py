"""Worker processes for the data pipeline: an ordered map over a stream with a bounded window.

Tokenizing is pure Python, so it only scales across processes. Results come back in submission order
(the token store must not depend on which worker finished first), and at most `window` tasks are in
flight, so a stream larger than memory never piles up in the parent. With one worker everything runs
in-process: same results, no pool.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import subprocess
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from mlxstory.errors import MlxstoryError


def physical_cores() -> int:
    """Physical cores usable by this process (SMT threads add little to pure-Python work)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    cores = 0
    if platform.system() == "Darwin":
        try:
            cores = int(subprocess.run(["sysctl", "-n", "hw.physicalcpu"], capture_output=True, text=True,
                                       timeout=5).stdout.strip())
        except (OSError, ValueError, subprocess.SubprocessError):
            cores = 0
    else:
        try:
            pairs, physical = set(), None
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("physical id"):
                    physical = line.split(":")[1].strip()
                elif line.startswith("core id"):
                    pairs.add((physical, line.split(":")[1].strip()))
            cores = len(pairs)
        except OSError:
            cores = 0
    return max(1, min(cores or usable, usable))


def check_workers(workers: int) -> int:
    if workers < 1:
        raise MlxstoryError(f"--workers must be at least 1, got {workers}")
    return workers


class WorkerPool:
    """`map(fn, items)` in `workers` processes (spawned, as on macOS, so MLX state is never forked)."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = check_workers(workers)
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> WorkerPool:
        if self.workers > 1:
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker processes (and free their memory); `map` runs in this process afterwards."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], window: int | None = None) -> Iterator[Any]:
        """fn(item) for each item, in order; at most `window` (default 2 per worker) in flight."""
        if self._pool is None:
            yield from map(fn, items)
            return
        pending: deque[Future] = deque()
        limit = window or 2 * self.workers
        try:
            for item in items:
                pending.append(self._pool.submit(fn, item))
                if len(pending) >= limit:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:  # an error or an abandoned generator: drop what was queued
                future.cancel()
