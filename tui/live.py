"""A live training run as a dashboard source: the trainer's generator, iterated in the app's worker.

`mlxstory.training.train.train` builds the model, optimizer and data when first iterated, so iterating it
here puts every MLX array on the worker thread. Keys reach the trainer through its
`TrainingControl`; samples are streamed on the same thread, between steps, from the checkpoint the
trainer has just written — at every eval, and on `g` (which asks for a save first) — so they show
the current weights without a second thread touching MLX while training runs.

Trackers (`--report-to`) get every event, and each finished eval sample as a `SampleGenerated`; a
tracker's warning shows in the log pane.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from mlxstory.training.events import CheckpointSaved, Event, SampleGenerated, StepCompleted, Warning
from mlxstory.training.train import TrainingControl

from .sources import SAMPLE_MAX_TOKENS, Cancelled, Item, SampleFinished, SamplePiece, sample_checkpoint


class EventConsumer(Protocol):
    """What the source feeds besides the screen (e.g. `mlxstory.training.trackers.Trackers`)."""

    def handle(self, event: Event) -> list[str]: ...


class TrainingSource:
    """Runs `train(run_dir, control=..., **train_options)` and relays its events and samples."""

    def __init__(
        self,
        run_dir: str | Path,
        *,
        control: TrainingControl | None = None,
        sample_at_eval: bool = True,
        sample_tokens: int = SAMPLE_MAX_TOKENS,
        train_options: dict[str, Any] | None = None,
        consumer: EventConsumer | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.consumer = consumer
        self.control = control or TrainingControl()
        self.sample_at_eval = sample_at_eval
        self.sample_tokens = sample_tokens
        self.train_options = train_options or {}
        self.prompt = ""  # the UI keeps this current; read at each eval
        self.error: BaseException | None = None
        self._sample_request: str | None = None
        self._last_step = -1
        self._latest: CheckpointSaved | None = None

    # Called from the UI thread -------------------------------------------------------------------

    def set_paused(self, paused: bool) -> None:
        self.control.pause() if paused else self.control.resume()

    def save_now(self) -> None:
        self.control.request_save()

    def stop(self) -> None:
        self.control.request_stop()

    def request_sample(self, prompt: str) -> bool:
        """Ask for a sample of the current weights. False when paused with every step already saved:
        the trainer will yield nothing until resumed, so the app samples the latest checkpoint itself."""
        latest = self._latest
        if self.control.paused and latest is not None and latest.step == self._last_step:
            return False
        self._sample_request = prompt
        self.control.request_save()
        return True

    # Run in the source worker thread -------------------------------------------------------------

    def events(self, cancelled: Cancelled) -> Iterator[Item]:
        from mlxstory.training.metrics_log import METRICS_FILE, read_metrics
        from mlxstory.training.train import train

        if self.train_options.get("resume") and (self.run_dir / METRICS_FILE).exists():
            # The run so far, so the chart and checkpoints continue rather than start empty.
            history = read_metrics(self.run_dir / METRICS_FILE)
            yield [Warning(problem) for problem in history.warnings] + history.events
        stream = train(self.run_dir, control=self.control, **self.train_options)
        try:
            for event in stream:
                yield [event, *self._consume(event)]
                if isinstance(event, StepCompleted):
                    self._last_step = event.step
                elif isinstance(event, CheckpointSaved) and event.path not in (None, "None"):
                    self._latest = event
                    prompt = self._take_sample_request(at_eval=event.val_loss is not None)
                    if prompt is not None:
                        pieces: list[str] = []
                        for item in sample_checkpoint(
                            Path(event.path), prompt, title=f"sample · step {event.step}",
                            cancelled=lambda: cancelled() or self.control.stop_requested,
                            max_tokens=self.sample_tokens,
                        ):
                            yield item
                            if isinstance(item, SamplePiece):
                                pieces.append(item.text)
                            elif isinstance(item, SampleFinished) and pieces:
                                sample = SampleGenerated(step=event.step, prompt=prompt, text="".join(pieces))
                                if warnings := self._consume(sample):
                                    yield warnings
                if cancelled() and not self.control.stop_requested:
                    self.control.request_stop()  # the app is closing: let the trainer save first
        except BaseException as error:
            self.error = error
            raise
        finally:
            stream.close()

    def _consume(self, event: Event) -> list[Warning]:
        if self.consumer is None:
            return []
        step = getattr(event, "step", None)
        return [Warning(message, step=step) for message in self.consumer.handle(event)]

    def _take_sample_request(self, at_eval: bool) -> str | None:
        prompt, self._sample_request = self._sample_request, None
        if prompt is not None:
            self.control.take_save_request()  # this checkpoint answers the save `g` asked for
            return prompt
        return self.prompt if at_eval and self.sample_at_eval and self.prompt else None

    def sample(self, prompt: str, cancelled: Cancelled) -> Iterator[Item]:
        """While paused with nothing unsaved: sample the latest checkpoint (training is idle)."""
        latest = self._latest
        if latest is None:
            yield [Warning("no checkpoint yet to sample from; resume training until the first eval")]
            return
        yield from sample_checkpoint(Path(latest.path), prompt, title=f"sample · step {latest.step}",
                                     cancelled=cancelled, max_tokens=self.sample_tokens)
