"""Helpers of the reliability suite: the fault tally, running the CLI, and "nothing was touched" snapshots.

Every injected fault goes through `fault(kind)`: it counts as injected on entry and as survived only when
the block (the injection and every check of what the user then sees) finishes without failing. A fault
after which there was nothing to check (a kill before the run directory existed) goes through
`unchecked(kind)` instead and is never counted as survived. The session prints the totals (see
conftest.py), which is where the README's numbers come from.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from typer.testing import CliRunner


@dataclass
class FaultTally:
    injected: Counter[str] = field(default_factory=Counter)
    survived: Counter[str] = field(default_factory=Counter)
    unchecked: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        kinds = ", ".join(f"{kind} {self.survived[kind]}/{n}" for kind, n in sorted(self.injected.items()))
        total, ok = sum(self.injected.values()), sum(self.survived.values())
        line = f"reliability: {total} faults injected and checked, {ok} survived ({kinds})"
        if self.unchecked:
            skipped = ", ".join(f"{kind} {n}" for kind, n in sorted(self.unchecked.items()))
            line += f"; not counted, nothing to check afterwards: {skipped}"
        return line


TALLY = FaultTally()


@contextmanager
def fault(kind: str) -> Iterator[None]:
    """Count one injected fault of `kind`; it counts as survived if the block completes."""
    TALLY.injected[kind] += 1
    yield
    TALLY.survived[kind] += 1


def unchecked(kind: str) -> None:
    """Note a fault that left nothing to check; it stays out of the injected and survived counts."""
    TALLY.unchecked[kind] += 1


def cli(*args: str):
    """`mlxstory ARGS` in-process; the result has exit_code, stdout and stderr apart."""
    from mlxstory.cli import app

    return CliRunner().invoke(app, list(args))


def assert_one_error_line(result, *expected: str) -> str:
    """Exit 1 with exactly one `error: ...` line (the last one on stderr) and no traceback."""
    stderr = result.stderr
    assert result.exit_code == 1, (result.exit_code, stderr, result.exception)
    assert "Traceback" not in stderr and "Traceback" not in result.stdout, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and stderr.splitlines()[-1] == errors[0], stderr
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


def mlxstory_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "mlxstory", *args]


def subprocess_env(**extra: str) -> dict[str, str]:
    """One BLAS thread: on a busy machine MKL would otherwise pick its thread count per call, and the
    order of float sums with it, so a resumed run could differ from the uninterrupted one in the last bit."""
    return {**os.environ, "MKL_NUM_THREADS": "1", "MKL_DYNAMIC": "FALSE", "OMP_NUM_THREADS": "1", **extra}


def run_mlxstory(*args: str, env: dict[str, str] | None = None, timeout: float = 300):
    """`python -m mlxstory ARGS` in a subprocess (for kills: SIGKILL must hit a real process)."""
    return subprocess.run(mlxstory_command(*args), capture_output=True, text=True, timeout=timeout,
                          env=subprocess_env(**(env or {})))


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under `folder` with its mtime (ns) and bytes: compare before and after a failing command."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}
