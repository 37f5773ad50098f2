"""The training loop, as a generator of events.

`train(run_dir)` builds the model, optimizer and batches inside the generator (so a dashboard can run
it in a worker thread: MLX arrays belong to the thread that made them), then yields a `RunStarted`,
a `StepCompleted` per step, an `EvalCompleted` + `CheckpointSaved` at every evaluation interval and
at the end, and a `RunFinished`. It writes `RUN/metrics.jsonl` itself, so every consumer (console,
dashboard, a script) leaves the same record.

Exact resume: the batch sampler's numpy state is checkpointed, and MLX's generator (dropout) is
reseeded from (seed, rank, step) before each step, so N steps + resume to 2N equals 2N in one go.
Data parallel (mx.distributed): pass the `group`; each rank trains on its slice of the group's batch
(batches.py), gradients are averaged in the compiled step, and only rank 0 writes files.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_map

from mlxstory.data.batches import BatchSampler, fixed_batches
from mlxstory.errors import MlxstoryError
from mlxstory.formats.config import TrainConfig
from mlxstory.model.fast_path import training_value_and_grad
from mlxstory.model.gpt import GPT, loss_fn
from mlxstory.training.checkpoint import (
    TrainerState,
    check_weights,
    load_trainer_checkpoint,
    read_latest,
    save_checkpoint,
)
from mlxstory.training.distributed import any_rank, group_mean
from mlxstory.training.events import (
    CheckpointSaved,
    EvalCompleted,
    Event,
    RunFinished,
    RunStarted,
    StepCompleted,
    Warning,
)
from mlxstory.training.metrics_log import METRICS_FILE, MetricsLog
from mlxstory.training.optimizer import AdamW, clip_by_global_norm, learning_rate_at
from mlxstory.training.run_dir import Run, open_run, planned_epochs, tokens_per_step

# More planned passes over the train split than this, and `train` warns: a model this size memorises it.
MAX_EPOCHS = 10

# Stream ids mixed into the seed: training batches, and the fixed train / val evaluation windows.
TRAIN_STREAM, EVAL_TRAIN_STREAM, EVAL_VAL_STREAM, DROPOUT_STREAM = 0, 1, 2, 3


class TrainingControl:
    """Requests from other threads (a Ctrl-C handler, dashboard keys), honoured between steps."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._save = threading.Event()

    def request_stop(self) -> None:
        """Finish the current step, save a checkpoint, end with RunFinished(reason="interrupted")."""
        self._stop.set()
        self._running.set()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def request_save(self) -> None:
        """Save a checkpoint after the current step (also while paused)."""
        self._save.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def take_save_request(self) -> bool:
        requested = self._save.is_set()
        self._save.clear()
        return requested

    def wait_while_paused(self, poll_seconds: float = 0.1) -> Iterator[None]:
        """Yields every poll while paused, so the loop can serve save requests meanwhile."""
        while self.paused and not self.stop_requested:
            self._running.wait(poll_seconds)
            yield


def peak_memory_bytes() -> int:
    getter = getattr(mx, "get_peak_memory", None) or mx.metal.get_peak_memory
    return int(getter())


def device_name() -> str:
    device = mx.default_device()
    return "gpu" if device.type == mx.gpu else "cpu"


def set_device(device: str | None) -> None:
    if device is None:
        return
    if device not in ("cpu", "gpu"):
        raise MlxstoryError(f"unknown device {device!r}; use --device cpu or --device gpu")
    if device == "gpu" and not mx.is_available(mx.gpu):
        raise MlxstoryError("--device gpu: this MLX build has no GPU backend here; use --device cpu "
                            "(or install mlx[cuda12] on an NVIDIA machine)")
    mx.set_default_device(mx.gpu if device == "gpu" else mx.cpu)


def train_sampler_seed(seed: int) -> list[int]:
    """The training batch sampler's seed; an imported run's first checkpoint starts it the same way."""
    return [seed, TRAIN_STREAM, 0]


def dropout_seed(seed: int, rank: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, DROPOUT_STREAM, rank, step]).generate_state(1, np.uint64)[0])


def make_train_step(model: GPT, optimizer: AdamW, config: TrainConfig, group: Any = None):
    """One compiled optimizer step over `gradient_accumulation` micro-batches: (inputs, targets, lr) ->
    (mean loss, pre-clip grad norm); model and optimizer state are updated in place."""
    model.recompute_blocks = config.recompute_blocks
    loss_and_grad = training_value_and_grad(model)
    world_size = 1 if group is None else group.size()
    micro = config.gradient_accumulation
    state = [model.state, optimizer.state, mx.random.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(inputs: mx.array, targets: mx.array, lr: mx.array):
        loss, grads = loss_and_grad(model, inputs[0], targets[0])
        for i in range(1, micro):
            # One micro-batch after the other: otherwise MLX, free to order independent work, runs
            # their forward passes side by side and holds all their activations at once.
            after = mx.depends(inputs[i], [loss] + [g for _, g in tree_flatten(grads)])
            more_loss, more_grads = loss_and_grad(model, after, targets[i])
            loss = loss + more_loss
            grads = tree_map(mx.add, grads, more_grads)
        if micro > 1:
            loss = loss / micro
            grads = tree_map(lambda g: g / micro, grads)
        if world_size > 1:
            loss, grads = group_mean((loss, grads), group)
        grads, norm = clip_by_global_norm(grads, config.grad_clip)
        optimizer.update(model, grads, lr)
        return loss, norm

    return step


def make_evaluator(model: GPT, batches: dict[str, list[tuple[np.ndarray, np.ndarray]]]):
    """Mean loss per split over fixed windows, in eval mode (no dropout), as Python floats."""
    arrays = {split: [(mx.array(x), mx.array(y)) for x, y in pairs] for split, pairs in batches.items()}
    compiled_loss = mx.compile(partial(loss_fn, model), inputs=model.state)

    def evaluate() -> dict[str, float]:
        model.eval()
        try:
            means = {split: mx.mean(mx.stack([compiled_loss(x, y) for x, y in pairs]))
                     for split, pairs in arrays.items()}
            mx.eval(means)
            return {split: value.item() for split, value in means.items()}
        finally:
            model.train()

    return evaluate


def train(
    run_dir: str | Path,
    *,
    resume: bool = False,
    control: TrainingControl | None = None,
    device: str | None = None,
    group: Any = None,
    keep_checkpoints: int = 2,
    overrides: dict[str, Any] | None = None,
) -> Iterator[Event]:
    """Train the run in `run_dir` (made by `run_dir.create_run`) to its `training_iterations`.

    `resume=True` continues from the latest checkpoint; without it the run must have none.
    `overrides` (e.g. training_iterations, learning_rate) change the run's train config, and are written
    to its train.ron only once the checkpoint has loaded, so a failed resume changes nothing. Stop,
    pause and save-now requests arrive through `control`. Ends with a `RunFinished` whose reason is
    "completed", "interrupted" or "diverged" (non-finite loss: the last good checkpoint is kept).
    """
    from mlxstory.data.token_store import TokenStore

    run = open_run(run_dir)
    control = control or TrainingControl()
    rank = 0 if group is None else group.rank()
    world_size = 1 if group is None else group.size()
    writes = rank == 0
    if not resume and read_latest(run.path) is not None:
        raise MlxstoryError(f"{run.path} already has checkpoints; continue with --resume {run.path}")
    set_device(device)

    mc, tc = run.model_config, run.train_config
    store = TokenStore.open(run.data_path)
    if resume:
        _check_store_tokenizer(run, store.tokenizer)
    train_tokens, val_tokens = store.split_tokens("train"), store.split_tokens("val")
    sampler = BatchSampler(train_tokens, mc.context_length, tc.contexts_per_batch,  # one stream for all ranks
                           seed=train_sampler_seed(tc.seed), split="train", rank=rank, world_size=world_size)
    shape = (mc.context_length, tc.contexts_per_batch, tc.evaluation_iterations)
    evaluate_batches = {
        "train": fixed_batches(train_tokens, *shape, seed=[tc.seed, EVAL_TRAIN_STREAM], split="train"),
        "val": fixed_batches(val_tokens, *shape, seed=[tc.seed, EVAL_VAL_STREAM], split="val"),
    }

    mx.random.seed(tc.seed)  # same initial weights on every rank
    model = GPT(mc)
    optimizer = AdamW(model.trainable_parameters(), model.decay_mask(), betas=tc.betas,
                      weight_decay=tc.weight_decay)
    state = TrainerState(step=0, sampler=sampler.state, seed=tc.seed, world_size=world_size)
    if resume and read_latest(run.path) is not None:  # killed before its first checkpoint: start over
        weights, optimizer_flat, state = load_trainer_checkpoint(run.path)
        check_weights(model, weights, run.path / "checkpoints")
        model.load_weights(list(weights.items()))
        optimizer.load_flat_state(optimizer_flat)
        sampler.state = state.sampler
        state.world_size = world_size  # a group of another size resumes the same stream of windows
    if overrides:
        run.train_config = replace(tc, **overrides)
        run.train_config.validate()
        if writes:
            run.save_train_config()
    epochs = planned_epochs(run.train_config.training_iterations,
                            tokens_per_step(mc, run.train_config, world_size), len(train_tokens))
    if writes and (run.info.train_tokens, run.info.epochs) != (len(train_tokens), epochs):
        run.info.train_tokens, run.info.epochs = len(train_tokens), epochs  # e.g. new --iterations
        run.save_info()
    # Warn on a fresh run, and when a resume plans more steps; not on every plain resume.
    warn_epochs = not resume or "training_iterations" in (overrides or {})
    mx.eval(model.parameters(), optimizer.state)
    model.train()

    log = MetricsLog(run.path / METRICS_FILE) if writes else None
    try:
        yield from _loop(run, model, optimizer, sampler, evaluate_batches, state, control, log, group,
                         keep_checkpoints, len(train_tokens), warn_epochs)
    except BaseException as error:
        if log is not None and not isinstance(error, GeneratorExit):
            log.write(RunFinished(step=state.step, reason="error", checkpoint=None,
                                  message=f"{type(error).__name__}: {error}"))
        raise
    finally:
        if log is not None:
            log.close()


def _loop(
    run: Run,
    model: GPT,
    optimizer: AdamW,
    sampler: BatchSampler,
    evaluate_batches: dict,
    state: TrainerState,
    control: TrainingControl,
    log: MetricsLog | None,
    group: Any,
    keep_checkpoints: int,
    train_tokens: int,
    warn_epochs: bool,
) -> Iterator[Event]:
    mc, tc = run.model_config, run.train_config
    world_size = 1 if group is None else group.size()
    rank = 0 if group is None else group.rank()
    step_tokens = tokens_per_step(mc, tc, world_size)
    total = tc.training_iterations
    epochs = planned_epochs(total, step_tokens, train_tokens)
    step_fn = make_train_step(model, optimizer, tc, group)
    evaluate = make_evaluator(model, evaluate_batches)
    last_saved = state.step
    last_checkpoint = _latest_weights(run.path)

    def emit(event: Event) -> Event:
        if log is not None:
            log.write(event)
        return event

    def checkpoint(losses: dict[str, float] | None) -> Event:
        nonlocal last_saved, last_checkpoint
        state.sampler = sampler.state
        state.train_loss = losses["train"] if losses else None
        state.val_loss = losses["val"] if losses else None
        is_best = losses is not None and (state.best_val_loss is None or losses["val"] <= state.best_val_loss)
        if is_best:
            state.best_val_loss = losses["val"]
        path = None
        if log is not None:  # rank 0 writes
            path = save_checkpoint(run.path, model, optimizer.flat_state(), state, keep_last=keep_checkpoints)
            last_checkpoint = str(path)
        last_saved = state.step
        return emit(CheckpointSaved(step=state.step, path=str(path), val_loss=state.val_loss,
                                    is_best=is_best))

    yield emit(RunStarted(
        run_dir=str(run.path), preset=run.info.preset, dataset=run.info.dataset, device=device_name(),
        parameter_count=model.parameter_count(), start_step=state.step, total_steps=total,
        tokens_per_step=step_tokens, world_size=world_size, model_config=asdict(mc),
        train_config=asdict(tc), train_tokens=train_tokens, epochs=epochs,
    ))
    for note in run.info.notes if state.step == 0 else []:
        yield emit(Warning(message=note, step=0))
    if warn_epochs and epochs > MAX_EPOCHS:
        yield emit(Warning(message=epochs_warning(total, step_tokens, train_tokens), step=state.step))
    if state.step >= total:
        yield emit(RunFinished(step=state.step, reason="completed", checkpoint=last_checkpoint,
                               message=f"already at step {state.step} of {total}; "
                               "pass a larger --iterations to train further"))
        return

    resume_hint = f"resume with: mlxstory train --resume {run.path}"
    while state.step < total:
        for _ in control.wait_while_paused():
            if control.take_save_request() and state.step != last_saved:
                yield checkpoint(None)
        if any_rank(control.stop_requested, group):  # all ranks stop after the same step
            break
        started = time.perf_counter()
        inputs, targets = sampler.next(tc.gradient_accumulation)
        lr = learning_rate_at(state.step, peak=tc.learning_rate, minimum=tc.min_learning_rate,
                              warmup=tc.warmup_iterations, total=total)
        mx.random.seed(dropout_seed(tc.seed, rank, state.step))
        loss, norm = step_fn(mx.array(inputs), mx.array(targets), mx.array(lr, dtype=mx.float32))
        mx.eval(loss, norm, model.parameters(), optimizer.state)
        loss_value, norm_value = loss.item(), norm.item()
        if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
            detail = f"loss {loss_value}, gradient norm {norm_value}"
            yield from _diverged(emit, state.step + 1, detail, last_checkpoint, run.path)
            return
        state.step += 1
        seconds = time.perf_counter() - started
        state.elapsed_seconds += seconds
        state.tokens_seen += step_tokens
        yield emit(StepCompleted(
            step=state.step, loss=loss_value, lr=lr, grad_norm=norm_value,
            tokens_per_second=step_tokens / seconds, peak_memory_bytes=peak_memory_bytes(),
            elapsed_seconds=state.elapsed_seconds,
        ))
        if state.step % tc.evaluation_interval == 0 or state.step == total:
            losses = evaluate()
            if not all(math.isfinite(v) for v in losses.values()):
                detail = f"eval train loss {losses['train']}, val loss {losses['val']}"
                yield from _diverged(emit, state.step, detail, last_checkpoint, run.path)
                return
            yield emit(EvalCompleted(step=state.step, train_loss=losses["train"], val_loss=losses["val"]))
            yield checkpoint(losses)
        elif control.take_save_request():
            yield checkpoint(None)

    if state.step < total:  # stopped early: keep everything done so far
        if state.step != last_saved:
            yield checkpoint(None)
        yield emit(RunFinished(step=state.step, reason="interrupted", checkpoint=last_checkpoint,
                               message=f"stopped at step {state.step} of {total}; {resume_hint}"))
        return
    yield emit(RunFinished(step=state.step, reason="completed", checkpoint=last_checkpoint,
                           message=f"trained {total} steps; best val loss {state.best_val_loss:.4f}"))


def epochs_warning(iterations: int, step_tokens: int, train_tokens: int) -> str:
    """Why passing over the train split many times is a problem, with the numbers and what to do."""
    epochs = planned_epochs(iterations, step_tokens, train_tokens)
    ten_passes = max(1, MAX_EPOCHS * train_tokens // step_tokens)
    return (f"this run passes over its train split {epochs:,.1f} times ({iterations:,} steps x "
            f"{step_tokens:,} tokens = {iterations * step_tokens:,} tokens; the train split has "
            f"{train_tokens:,}), so the model will memorise it rather than learn to write: give it more data "
            f"(e.g. --data tinystories) or fewer --iterations ({ten_passes:,} is {MAX_EPOCHS} passes)")


def _diverged(emit, step: int, detail: str, last_checkpoint: str | None, run_path: Path):
    kept = f"last good checkpoint kept: {last_checkpoint}" if last_checkpoint else "no checkpoint saved yet"
    message = (f"training diverged at step {step} ({detail}); stopped without saving; {kept}. "
               f"Lower the learning rate (--resume {run_path} --lr <smaller>) or raise warmup_iterations")
    yield emit(RunFinished(step=step, reason="diverged", checkpoint=last_checkpoint, message=message))


def _check_store_tokenizer(run: Run, store_tokenizer: Any) -> None:
    """A resumed run's token store must hold ids of the run's own tokenizer: a store re-made with another
    one feeds re-mapped or out-of-range ids, which otherwise shows up as a misleading NaN "divergence"."""
    from mlxstory.data.tokenizer import Tokenizer

    ours = Tokenizer.load(run.path / "tokenizer.ron")
    if ours.vocab_size != run.model_config.vocab_size:
        raise MlxstoryError(f"{run.path / 'tokenizer.ron'} has {ours.vocab_size} tokens but model.ron says "
                            f"vocab_size {run.model_config.vocab_size}; the tokenizer belongs to another run")
    key = (ours.alphabet, ours.merges, ours.special_tokens)
    if key != (store_tokenizer.alphabet, store_tokenizer.merges, store_tokenizer.special_tokens):
        raise MlxstoryError(f"the token store {run.data_path} was made with another tokenizer than "
                            f"{run.path / 'tokenizer.ron'} (re-tokenized?); resume needs the run's original "
                            "token store, or start a new run on this one")


def _latest_weights(run_path: Path) -> str | None:
    pointer = read_latest(run_path)
    return None if pointer is None else str(run_path / "checkpoints" / pointer["weights"])
