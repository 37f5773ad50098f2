from __future__ import annotations

import numpy as np
import pytest

from mlxstory.data.batches import BatchSampler, fixed_batches
from mlxstory.errors import DataError


def stream(n: int = 1000) -> np.ndarray:
    return np.arange(n, dtype=np.uint16)


def test_windows_are_contiguous_and_targets_are_inputs_shifted_by_one():
    sampler = BatchSampler(stream(), context_length=8, batch_size=4, seed=0)
    inputs, targets = sampler.next(micro_batches=3)
    assert inputs.shape == targets.shape == (3, 4, 8)
    assert inputs.dtype == np.int32
    np.testing.assert_array_equal(np.diff(inputs, axis=-1), 1)  # an arange stream: windows are runs
    np.testing.assert_array_equal(targets, inputs + 1)


def test_every_start_including_the_last_window_can_be_drawn():
    tokens = stream(12)
    sampler = BatchSampler(tokens, context_length=8, batch_size=64, seed=1)
    starts = {int(row[0]) for _ in range(20) for row in sampler.next()[0][0]}
    assert starts == {0, 1, 2, 3}  # 12 tokens hold windows of 9 starting at 0..3


def test_same_seed_same_batches_and_restored_state_continues_exactly():
    a = BatchSampler(stream(), 8, 4, seed=7)
    b = BatchSampler(stream(), 8, 4, seed=7)
    a.next()
    saved = a.state
    expected = [a.next()[0] for _ in range(3)]
    b.state = saved
    np.testing.assert_array_equal(np.stack(expected), np.stack([b.next()[0] for _ in range(3)]))
    assert not np.array_equal(BatchSampler(stream(), 8, 4, seed=8).next()[0], expected[0])


def test_state_is_plain_json():
    import json

    sampler = BatchSampler(stream(), 8, 4, seed=3)
    restored = BatchSampler(stream(), 8, 4, seed=0)
    restored.state = json.loads(json.dumps(sampler.state))
    np.testing.assert_array_equal(sampler.next()[0], restored.next()[0])


def test_fixed_batches_repeat_for_every_evaluation():
    first = fixed_batches(stream(), 8, 4, count=2, seed=11, split="val")
    again = fixed_batches(stream(), 8, 4, count=2, seed=11, split="val")
    assert len(first) == 2 and first[0][0].shape == (4, 8)
    for (x1, y1), (x2, y2) in zip(first, again, strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)


def test_a_split_shorter_than_one_window_is_a_clear_error():
    with pytest.raises(DataError, match="val split has 8 tokens.*context_length"):
        BatchSampler(stream(8), context_length=8, batch_size=2, seed=0, split="val")
