"""Training progress as a stream of plain event objects.

The trainer yields these; the console printer, the metrics log (`metrics.jsonl`) and the dashboard
all consume the same stream, and a dashboard replays a finished run from the log alone. Every event
serialises to one flat JSON object with an `"event"` key naming its kind.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Event:
    kind: ClassVar[str] = "event"

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.kind, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class RunStarted(Event):
    kind: ClassVar[str] = "start"
    run_dir: str
    preset: str
    dataset: str
    device: str
    parameter_count: int
    start_step: int
    total_steps: int
    tokens_per_step: int
    world_size: int = 1
    model_config: dict[str, Any] = field(default_factory=dict)
    train_config: dict[str, Any] = field(default_factory=dict)
    train_tokens: int = 0  # tokens in the train split (0: a log written before this was recorded)
    epochs: float = 0.0  # planned passes over the train split: total_steps * tokens_per_step / train_tokens


@dataclass(frozen=True)
class StepCompleted(Event):
    kind: ClassVar[str] = "step"
    step: int
    loss: float
    lr: float
    grad_norm: float
    tokens_per_second: float
    peak_memory_bytes: int
    elapsed_seconds: float


@dataclass(frozen=True)
class EvalCompleted(Event):
    kind: ClassVar[str] = "eval"
    step: int
    train_loss: float
    val_loss: float


@dataclass(frozen=True)
class CheckpointSaved(Event):
    kind: ClassVar[str] = "checkpoint"
    step: int
    path: str
    val_loss: float | None
    is_best: bool


@dataclass(frozen=True)
class SampleGenerated(Event):
    kind: ClassVar[str] = "sample"
    step: int
    prompt: str
    text: str


@dataclass(frozen=True)
class Warning(Event):  # noqa: A001 - the event's name in the log is "warning"
    kind: ClassVar[str] = "warning"
    message: str
    step: int | None = None


@dataclass(frozen=True)
class RunFinished(Event):
    kind: ClassVar[str] = "done"
    step: int
    reason: str  # "completed" | "interrupted" | "diverged" | "error"
    checkpoint: str | None
    message: str = ""


EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls
    for cls in (
        RunStarted, StepCompleted, EvalCompleted, CheckpointSaved, SampleGenerated, Warning, RunFinished
    )
}


def event_from_dict(record: dict[str, Any]) -> Event:
    """Rebuild an event from a `metrics.jsonl` record; unknown extra keys are ignored."""
    kind = record.get("event")
    cls = EVENT_TYPES.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"unknown event kind {kind!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in record.items() if k in names})
