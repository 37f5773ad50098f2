"""Training and evaluation batches: random windows of `context_length + 1` tokens from one split.

A split is one stream, its stories joined with `<|endoftext|>`, so a window may span a story
boundary, as in the original. The sampler's only state is its numpy generator, which the trainer
saves in every checkpoint: a resumed run draws exactly the windows the uninterrupted run would have.

Data parallel: every rank holds the same generator and draws the whole group's batch of
`world_size * batch_size` windows, then keeps its own slice. So 2 ranks at batch B train on exactly
the windows 1 process at batch 2B would, and one saved state resumes every rank.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlxstory.errors import DataError


def check_stream(tokens: np.ndarray, context_length: int, split: str) -> None:
    if tokens.ndim != 1 or len(tokens) < context_length + 1:
        raise DataError(
            f"the {split} split has {len(tokens)} tokens, fewer than one window of context_length+1 = "
            f"{context_length + 1}; use more text or a model config with a smaller context_length"
        )


def windows(tokens: np.ndarray, starts: np.ndarray, context_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and next-token targets, both (len(starts), context_length) int32."""
    rows = tokens[starts[:, None] + np.arange(context_length + 1)].astype(np.int32)
    return rows[:, :-1], rows[:, 1:]


class BatchSampler:
    """Uniformly random windows from one token stream, reproducible from a seed and resumable."""

    def __init__(
        self, tokens: np.ndarray, context_length: int, batch_size: int, seed: Any, split: str = "train",
        *, rank: int = 0, world_size: int = 1,
    ):
        check_stream(tokens, context_length, split)
        self.tokens = tokens
        self.context_length = context_length
        self.batch_size = batch_size  # per rank
        self.rank, self.world_size = rank, world_size
        self.rng = np.random.default_rng(seed)

    def next(self, micro_batches: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(micro_batches, batch_size, context_length) inputs and targets for one optimizer step: this
        rank's slice of each micro-batch of the group's (micro_batches, world_size * batch_size)."""
        last_start = len(self.tokens) - self.context_length - 1
        starts = self.rng.integers(0, last_start + 1, size=micro_batches * self.world_size * self.batch_size)
        starts = starts.reshape(micro_batches, self.world_size, self.batch_size)[:, self.rank].reshape(-1)
        inputs, targets = windows(self.tokens, starts, self.context_length)
        shape = (micro_batches, self.batch_size, self.context_length)
        return inputs.reshape(shape), targets.reshape(shape)

    @property
    def state(self) -> dict:
        """The generator's state: plain JSON (PCG64's 128-bit integers stay exact in Python ints)."""
        return self.rng.bit_generator.state

    @state.setter
    def state(self, value: dict) -> None:
        if value.get("bit_generator") != type(self.rng.bit_generator).__name__:
            raise DataError(f"saved sampler state is for {value.get('bit_generator')!r}, not PCG64")
        self.rng.bit_generator.state = value


def fixed_batches(
    tokens: np.ndarray, context_length: int, batch_size: int, count: int, seed: Any, split: str
) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` batches drawn once from a fixed seed: every evaluation sees the same windows."""
    sampler = BatchSampler(tokens, context_length, batch_size, seed, split)
    return [tuple(a[0] for a in sampler.next()) for _ in range(count)]  # type: ignore[misc]
