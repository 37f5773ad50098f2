"""`RUN/metrics.jsonl`: one JSON object per training event, appended and flushed line by line.

The file is the run's history: the dashboard follows it while training runs and replays it
afterwards. A process killed mid-write leaves a torn last line; readers skip and report it rather
than fail, and a writer reopening the file first ends the torn line so later records stay whole.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlxstory.training.events import EvalCompleted, Event, RunStarted, StepCompleted, event_from_dict

METRICS_FILE = "metrics.jsonl"


def _finite(record: dict[str, Any]) -> dict[str, Any]:
    """NaN/inf are not JSON: write them as null so every line parses everywhere."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}


class MetricsLog:
    """Appends events to a metrics file; use as a context manager or call `close()`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = self.path.open("a+b")
        if self._file.tell() > 0:
            self._file.seek(-1, 2)
            if self._file.read(1) != b"\n":
                self._file.write(b"\n")  # end a torn line so the next record starts whole

    def write(self, event: Event) -> None:
        self._file.write((json.dumps(_finite(event.to_dict()), allow_nan=False) + "\n").encode())
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_line(line: str) -> Event | None:
    """One log line as an event; None for a blank line. Raises ValueError for a torn or foreign line."""
    line = line.strip()
    if not line:
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"not JSON ({error.msg})") from None
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    try:
        return event_from_dict(record)
    except TypeError as error:
        raise ValueError(f"missing fields: {error}") from None


@dataclass
class MetricsRead:
    events: list[Event] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def read_metrics(path: str | Path) -> MetricsRead:
    """All readable events of a metrics file, and one warning per line that could not be read."""
    path = Path(path)
    result = MetricsRead()
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    for number, line in enumerate(lines, start=1):
        try:
            event = parse_line(line)
        except ValueError as error:
            where = "torn last line" if number == len(lines) else "unreadable line"
            result.warnings.append(f"{path}:{number}: {where} skipped ({error})")
            continue
        if event is not None:
            result.events.append(event)
    return result


def current_history(events: list[Event]) -> list[Event]:
    """Drop steps and evals that a resume replaced.

    A run killed after its last checkpoint logged steps it then redid on `--resume`; each RunStarted
    says where the run restarted, so the records past that step from before it are superseded.
    """
    kept: list[Event] = []
    for event in events:
        if isinstance(event, RunStarted):
            kept = [e for e in kept if not (isinstance(e, (StepCompleted, EvalCompleted))
                                            and e.step > event.start_step)]
        kept.append(event)
    return kept
