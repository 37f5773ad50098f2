"""Where the dashboard's events come from: a run directory (replay, then follow) or a live training run.

A source is iterated inside a thread worker and yields items: a list of events, or a piece of a
streamed sample. The app turns each item into a message; nothing here touches a widget.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlxstory.errors import MlxstoryError
from mlxstory.training.events import Event, RunFinished, Warning

from .follow import MetricsFollower

SAMPLE_MAX_TOKENS = 200
SAMPLE_TEMPERATURE = 0.8


@dataclass(frozen=True)
class SampleStarted:
    title: str
    prompt: str


@dataclass(frozen=True)
class SamplePiece:
    text: str


@dataclass(frozen=True)
class SampleFinished:
    note: str = ""


SampleItem = SampleStarted | SamplePiece | SampleFinished
Item = list[Event] | SampleItem
Cancelled = Callable[[], bool]


def stream_sample(
    model: Any, tokenizer: Any, prompt: str, *, title: str, cancelled: Cancelled, seed: int | None = None,
    max_tokens: int = SAMPLE_MAX_TOKENS, temperature: float = SAMPLE_TEMPERATURE,
) -> Iterator[SampleItem]:
    """A story from `model` via the same generator as `mlxstory generate`, piece by piece."""
    from mlxstory.generation.generate import stream_generate

    yield SampleStarted(title, prompt)
    yield SamplePiece(prompt)
    count, finish, rate = 0, "length", 0.0
    for response in stream_generate(
        model, tokenizer, prompt, max_tokens=max_tokens, temperature=temperature, seed=seed
    ):
        if response.text:
            yield SamplePiece(response.text)
        count += 1
        rate = getattr(response, "tokens_per_second", 0.0) or rate
        finish = getattr(response, "finish_reason", None) or finish
        if cancelled():
            finish = "cancelled"
            break
    yield SampleFinished(f"{count} tokens · {rate:.0f} tok/s · {finish}")


def sample_checkpoint(
    path: Path, prompt: str, *, title: str | None, cancelled: Cancelled, max_tokens: int = SAMPLE_MAX_TOKENS
) -> Iterator[Item]:
    """Load a checkpoint (a run's latest, or one file) in this thread and stream a sample from it."""
    from mlxstory.training.checkpoint import load_model

    try:
        loaded = load_model(path)
    except MlxstoryError as error:
        yield [Warning(f"cannot sample: {error}")]
        return
    title = title or f"sample · step {loaded.step}"
    try:
        yield from stream_sample(loaded.model, loaded.tokenizer, prompt, title=title, cancelled=cancelled,
                                 max_tokens=max_tokens)
    except MlxstoryError as error:  # e.g. an empty prompt for an imported gpt-rs model
        yield [Warning(f"cannot sample: {error}")]


class RunDirSource:
    """Replays `RUN/metrics.jsonl`, then follows it while the run is still being written.

    Following stops at the run's `done` event (or never, with `follow=False` it stops at the end of
    the file). `g` samples from the run's latest checkpoint, loaded afresh in the sampling thread.
    """

    def __init__(self, run_dir: Path, *, follow: bool = True, poll_seconds: float = 0.5) -> None:
        self.run_dir = Path(run_dir)
        self.follow = follow
        self.poll_seconds = poll_seconds
        self.metrics_path = self.run_dir / "metrics.jsonl"

    def events(self, cancelled: Cancelled) -> Iterator[Item]:
        follower = MetricsFollower(self.metrics_path)
        if not self.metrics_path.exists():
            yield [Warning(f"{self.metrics_path} does not exist yet; waiting for the run to start")]
        finished = False
        while not cancelled():
            batch = follower.poll()
            items: list[Event] = [Warning(problem) for problem in batch.problems] + batch.events
            finished = finished or any(isinstance(e, RunFinished) for e in batch.events)
            if items:
                yield items
                continue  # more may be buffered: read again before sleeping
            if finished or not self.follow:
                break
            deadline = time.monotonic() + self.poll_seconds
            while time.monotonic() < deadline and not cancelled():
                time.sleep(0.05)
        if follower.pending_partial_line:
            yield [Warning(f"{self.metrics_path.name} ends in an incomplete line (ignored)")]

    def sample(self, prompt: str, cancelled: Cancelled) -> Iterator[Item]:
        yield from sample_checkpoint(self.run_dir, prompt, title=None, cancelled=cancelled)
