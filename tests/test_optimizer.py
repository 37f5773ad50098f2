from __future__ import annotations

import math

import mlxstory  # noqa: F401  isort: skip  (loads MKL before mlx.core)
import mlx.core as mx
import numpy as np
import pytest

from mlxstory.errors import CheckpointError
from mlxstory.training.optimizer import AdamW, clip_by_global_norm, learning_rate_at


def schedule(step: int) -> float:
    return learning_rate_at(step, peak=1e-3, minimum=1e-4, warmup=10, total=110)


def test_schedule_warms_up_linearly_then_decays_by_cosine_to_the_minimum():
    assert schedule(0) == pytest.approx(1e-4)
    assert schedule(4) == pytest.approx(5e-4)
    assert schedule(9) == pytest.approx(1e-3)
    assert schedule(10) == pytest.approx(1e-3)
    # Halfway through the cosine (update 10 + 99/2) the rate is halfway between peak and minimum.
    assert learning_rate_at(10, peak=1.0, minimum=0.0, warmup=10, total=21) == 1.0
    assert learning_rate_at(15, peak=1.0, minimum=0.0, warmup=10, total=21) == pytest.approx(0.5)
    assert schedule(109) == pytest.approx(1e-4)
    decay = [schedule(s) for s in range(10, 110)]
    assert all(a > b for a, b in zip(decay, decay[1:], strict=False))
    assert schedule(500) == pytest.approx(1e-4)  # past the end (a resumed, extended run) stays at the minimum


def test_schedule_without_warmup_starts_at_the_peak():
    assert learning_rate_at(0, peak=2e-3, minimum=0.0, warmup=0, total=100) == 2e-3


def adamw_by_hand(p, grads, lr, wd, b1, b2, eps, decay):
    """torch.optim.AdamW's update written out in float64 numpy."""
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        if decay:
            p = p * (1 - lr * wd)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        denom = np.sqrt(v) / math.sqrt(1 - b2**t) + eps
        p = p - lr / (1 - b1**t) * m / denom
    return p


def test_two_adamw_steps_match_a_hand_computation_and_decay_only_masked_weights():
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(3, 4))
    b0 = rng.normal(size=(4,))
    gw = [rng.normal(size=(3, 4)) for _ in range(2)]
    gb = [rng.normal(size=(4,)) for _ in range(2)]
    params = {"layer": {"weight": mx.array(w0, dtype=mx.float32), "bias": mx.array(b0, dtype=mx.float32)}}
    optimizer = AdamW(params, {"layer": {"weight": True, "bias": False}}, betas=(0.9, 0.95), weight_decay=0.1)
    for step in range(2):
        grads = {"layer": {"weight": mx.array(gw[step], dtype=mx.float32),
                           "bias": mx.array(gb[step], dtype=mx.float32)}}
        params = optimizer.apply_gradients(grads, params, mx.array(0.01))
    expected_w = adamw_by_hand(w0, gw, 0.01, 0.1, 0.9, 0.95, 1e-8, decay=True)
    expected_b = adamw_by_hand(b0, gb, 0.01, 0.1, 0.9, 0.95, 1e-8, decay=False)
    np.testing.assert_allclose(np.array(params["layer"]["weight"]), expected_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.array(params["layer"]["bias"]), expected_b, rtol=1e-5, atol=1e-6)
    assert optimizer.step == 2


def test_zero_gradients_shrink_weight_matrices_only():
    params = {"weight": mx.ones((2, 2)), "bias": mx.ones((2,))}
    optimizer = AdamW(params, {"weight": True, "bias": False}, weight_decay=0.5)
    zeros = {"weight": mx.zeros((2, 2)), "bias": mx.zeros((2,))}
    new = optimizer.apply_gradients(zeros, params, 0.1)
    np.testing.assert_allclose(np.array(new["weight"]), 0.95)
    np.testing.assert_allclose(np.array(new["bias"]), 1.0)


def test_matches_torch_adamw_one_step():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    w0, g = rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=(5, 3)).astype(np.float32)
    tw = torch.nn.Parameter(torch.tensor(w0))
    tw.grad = torch.tensor(g)
    torch.optim.AdamW([tw], lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1).step()
    optimizer = AdamW({"w": mx.array(w0)}, {"w": True}, betas=(0.9, 0.95), weight_decay=0.1)
    new = optimizer.apply_gradients({"w": mx.array(g)}, {"w": mx.array(w0)}, 3e-3)
    np.testing.assert_allclose(np.array(new["w"]), tw.detach().numpy(), rtol=1e-6, atol=1e-7)


def test_clipping_scales_to_the_max_norm_and_reports_the_original_norm():
    grads = {"a": mx.array([6.0, 0.0]), "b": [mx.array([8.0])]}
    clipped, norm = clip_by_global_norm(grads, 1.0)
    assert norm.item() == pytest.approx(10.0)
    assert np.array(clipped["a"]).tolist() == pytest.approx([0.6, 0.0], rel=1e-5)
    assert np.array(clipped["b"][0]).tolist() == pytest.approx([0.8], rel=1e-5)
    small, _ = clip_by_global_norm(grads, 100.0)
    assert np.array(small["a"]).tolist() == [6.0, 0.0]
    unclipped, norm = clip_by_global_norm(grads, 0.0)
    assert unclipped is grads and norm.item() == pytest.approx(10.0)


def test_state_round_trips_through_its_flat_form_and_rejects_another_shape():
    params = {"blocks": [{"w": mx.ones((2, 3))}], "head": mx.ones((3,))}
    mask = {"blocks": [{"w": True}], "head": False}
    optimizer = AdamW(params, mask)
    optimizer.apply_gradients({"blocks": [{"w": mx.full((2, 3), 0.5)}], "head": mx.ones((3,))}, params, 0.1)
    flat = optimizer.flat_state()
    assert set(flat) == {"step", "m.blocks.0.w", "v.blocks.0.w", "m.head", "v.head"}
    fresh = AdamW(params, mask)
    fresh.load_flat_state(flat)
    assert fresh.step == 1
    restored = fresh.state["m"]["blocks"][0]["w"]
    np.testing.assert_array_equal(np.array(restored), np.array(flat["m.blocks.0.w"]))
    other = AdamW({"blocks": [{"w": mx.ones((3, 3))}], "head": mx.ones((3,))}, mask)
    with pytest.raises(CheckpointError, match="shape"):
        other.load_flat_state(flat)
    with pytest.raises(CheckpointError, match="missing"):
        fresh.load_flat_state({"step": flat["step"]})
