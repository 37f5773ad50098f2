"""Fit a training step into a memory budget: micro-batches first, block recomputation if needed.

A step's peak grows linearly with the rows of one micro-batch, so two small measured probes (real
compiled training steps of one and two windows on this device, each op waited for) give its fixed
part and its cost per row. The plan splits the batch into equal micro-batches (gradient accumulation
is exact, and the sampler draws the very same windows) and recomputes blocks only when micro-batches
alone cannot fit. Training then runs with MLX's memory limit at the budget, so MLX waits for work in
flight rather than allocating ahead of it. Measured figures: docs/memory.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import mlx.core as mx
import numpy as np

from mlxstory.errors import MlxstoryError
from mlxstory.formats.config import ModelConfig, TrainConfig

GIB = 2**30
OTHER_DEVICES_SHARE = 0.75  # of total memory, where no working set is recommended: the OS keeps the rest
# A plan fills this share of the budget: MLX's memory limit is checked between ops, so work already in
# flight can overshoot it a little.
PLAN_SHARE = 0.85


class MemoryBudgetError(MlxstoryError):
    """The run cannot fit the memory budget in any way this module knows."""


def size(count: int) -> str:
    return f"{count / GIB:.1f} GiB" if count >= GIB else f"{count / 2**20:.0f} MiB"


def total_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * GIB


def default_budget() -> tuple[int, str]:
    """(bytes, where from): Metal's recommended working set (what macOS lets the GPU keep without
    squeezing the OS and other apps), else 75% of the device's or the machine's memory."""
    info = mx.device_info() if hasattr(mx, "device_info") else {}
    recommended = info.get("max_recommended_working_set_size")
    if recommended:
        return int(recommended), "Metal's recommended working set"
    total = info.get("total_memory") or info.get("memory_size")
    if total and mx.default_device().type == mx.gpu:
        return int(OTHER_DEVICES_SHARE * int(total)), f"{OTHER_DEVICES_SHARE:.0%} of the GPU's memory"
    return int(OTHER_DEVICES_SHARE * total_memory_bytes()), f"{OTHER_DEVICES_SHARE:.0%} of this machine's RAM"


def parse_budget(value: float | None) -> tuple[int, str]:
    if value is None:
        return default_budget()
    if not value > 0:
        raise MlxstoryError(f"--max-memory must be a positive number of GiB, got {value}; "
                            "e.g. --max-memory 4")
    return int(value * GIB), "--max-memory"


@dataclass(frozen=True)
class MemoryModel:
    """Peak bytes of a training step = fixed + per_row * rows of one micro-batch (+ accumulator)."""

    fixed: int
    per_row: int
    parameter_bytes: int

    def peak(self, rows: int, micro_batches: int) -> int:
        accumulated = 2 * self.parameter_bytes if micro_batches > 1 else 0  # the running sum of the grads
        return self.fixed + self.per_row * rows + accumulated


def probe(model_config: ModelConfig, recompute: bool) -> MemoryModel:
    """Measure the step's fixed part and cost per row: two compiled training steps (as `make_train_step`
    builds them, AdamW included) on one- and two-window batches, each op waited for (memory limit of
    one byte), so the figure is what the step needs rather than what MLX's run-ahead allocates."""
    from mlxstory.model.gpt import GPT
    from mlxstory.training.optimizer import AdamW
    from mlxstory.training.train import make_train_step

    rng = np.random.default_rng(0)
    peaks, parameter_bytes = [], 0
    previous_limit = mx.set_memory_limit(1)
    try:
        for rows in (1, 2):
            model = GPT(model_config)
            model.train()
            parameter_bytes = model.parameter_count() * 4
            optimizer = AdamW(model.trainable_parameters(), model.decay_mask())
            step = make_train_step(model, optimizer, TrainConfig(contexts_per_batch=rows,
                                                                 recompute_blocks=recompute))
            tokens = rng.integers(0, model_config.vocab_size, (1, rows, model_config.context_length + 1))
            x, y = mx.array(tokens[..., :-1].astype(np.int32)), mx.array(tokens[..., 1:].astype(np.int32))
            for _ in range(2):  # the second step has AdamW's moments
                mx.eval(model.parameters(), optimizer.state, x, y)
                mx.clear_cache()
                mx.reset_peak_memory()
                mx.eval(step(x, y, mx.array(0.0)), model.parameters(), optimizer.state)
            peaks.append(mx.get_peak_memory())
            del model, optimizer, step
    finally:
        mx.set_memory_limit(previous_limit)
        mx.clear_cache()
    per_row = max(0, peaks[1] - peaks[0])
    return MemoryModel(fixed=peaks[0] - per_row, per_row=per_row, parameter_bytes=parameter_bytes)


@dataclass(frozen=True)
class Plan:
    micro_batches: int  # the preset's batch split into this many equal micro-batches
    rows: int  # windows per micro-batch
    recompute_blocks: bool
    peak_bytes: int  # the estimate for that choice
    budget_bytes: int
    budget_source: str

    def describe(self) -> str:
        plural = "es" if self.micro_batches > 1 else ""
        how = f"{self.micro_batches} micro-batch{plural} of {self.rows} windows"
        recompute = "recomputing blocks" if self.recompute_blocks else "no recomputation"
        return (f"memory: ~{size(self.peak_bytes)} per step within {size(self.budget_bytes)} "
                f"({self.budget_source}): {how}, {recompute}")


def choose(train_config: TrainConfig, budget: int, source: str, models: dict[bool, MemoryModel]) -> Plan:
    """The fastest way to fit: fewest micro-batches without recomputation, then with it."""
    batch, accumulation = train_config.contexts_per_batch, train_config.gradient_accumulation
    splits = [k for k in range(1, batch + 1) if batch % k == 0]
    for recompute in sorted(models):  # False first
        for k in splits:
            peak = models[recompute].peak(batch // k, k * accumulation)
            if peak <= PLAN_SHARE * budget:
                return Plan(k, batch // k, recompute, peak, budget, source)
    least = min(model.peak(1, batch * accumulation) for model in models.values())
    usable = size(int(PLAN_SHARE * budget))
    raise MemoryBudgetError(f"a training step needs at least {size(least)} even one window at a time "
                            f"(blocks recomputed), over {usable} of the {size(budget)} budget ({source}); "
                            "raise --max-memory or choose a smaller model (e.g. --preset small)")


def fit(model_config: ModelConfig, train_config: TrainConfig, budget: int, source: str,
        probe_fn=probe) -> tuple[TrainConfig, Plan]:
    """The train config that fits `budget` bytes (same effective batch, same windows) and its plan."""
    models = {train_config.recompute_blocks: probe_fn(model_config, train_config.recompute_blocks)}
    try:
        plan = choose(train_config, budget, source, models)
    except MemoryBudgetError:
        if True in models:
            raise
        models[True] = probe_fn(model_config, True)
        plan = choose(train_config, budget, source, models)
    fitted = replace(train_config, contexts_per_batch=plan.rows,
                     gradient_accumulation=train_config.gradient_accumulation * plan.micro_batches,
                     recompute_blocks=plan.recompute_blocks)
    return fitted, plan
