"""Reading a run's `metrics.jsonl` incrementally: replay what is there, then follow what gets appended.

A line becomes an event only once its newline has arrived, so a line the trainer is still writing is
never parsed half-way; a line that is complete but not valid JSON (a torn write from a killed run,
followed by the resumed run's lines) is skipped and reported, never fatal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mlxstory.training.events import Event
from mlxstory.training.metrics_log import parse_line


@dataclass
class Batch:
    events: list[Event] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class MetricsFollower:
    """Each `poll()` returns the events of the lines completed since the last poll."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self._line_number = 0

    @property
    def pending_partial_line(self) -> bool:
        """True while the file ends in a line without its newline (being written, or torn by a kill)."""
        return bool(self._partial.strip())

    def poll(self, max_bytes: int = 4 << 20) -> Batch:
        batch = Batch()
        try:
            with self.path.open("rb") as handle:
                size = handle.seek(0, 2)
                if size < self._offset:  # replaced or truncated: start over
                    self._offset, self._partial, self._line_number = 0, b"", 0
                handle.seek(self._offset)
                chunk = handle.read(max_bytes)
        except FileNotFoundError:
            return batch
        self._offset += len(chunk)
        data = self._partial + chunk
        *lines, self._partial = data.split(b"\n")
        for raw in lines:
            self._line_number += 1
            try:
                event = parse_line(raw.decode("utf-8", errors="replace"))
            except ValueError as error:
                batch.problems.append(f"{self.path.name} line {self._line_number} skipped: {error}")
                continue
            if event is not None:
                batch.events.append(event)
        return batch
