"""AdamW with decoupled weight decay on a mask, the warmup + cosine schedule, and global-norm clipping.

Written out (about forty lines) instead of `mlx.optimizers.AdamW`: the state is one plain tree
`{"step", "m", "v"}` that saves to a single safetensors file and loads back bit for bit, and the
update follows `torch.optim.AdamW` term for term, so the PyTorch twin can check one step exactly.
"""

from __future__ import annotations

import math
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map, tree_map_with_path, tree_reduce

from mlxstory.training.checkpoint import check_arrays


def learning_rate_at(step: int, *, peak: float, minimum: float, warmup: int, total: int) -> float:
    """Learning rate of update number `step` (0-based).

    Linear warmup reaching `peak` at update `warmup - 1`, then a cosine from `peak` at update
    `warmup` down to `minimum` at the last update (`total - 1`).
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    span = max(1, total - 1 - warmup)
    progress = min(1.0, (step - warmup) / span)
    return minimum + 0.5 * (peak - minimum) * (1.0 + math.cos(math.pi * progress))


def global_norm(grads: Any) -> mx.array:
    return mx.sqrt(tree_reduce(lambda total, g: total + g.astype(mx.float32).square().sum(), grads, 0.0))


def clip_by_global_norm(grads: Any, max_norm: float) -> tuple[Any, mx.array]:
    """Scale all gradients by min(1, max_norm / (norm + 1e-6)), as torch's clip_grad_norm_; 0 disables."""
    norm = global_norm(grads)
    if max_norm <= 0:
        return grads, norm
    scale = mx.minimum(max_norm / (norm + 1e-6), 1.0)
    return tree_map(lambda g: g * scale, grads), norm


class AdamW:
    """AdamW whose weight decay applies only where `decay_mask` is True (weight matrices).

    `state` is mutated in place (never rebound) so `mx.compile(..., inputs=[optimizer.state])`
    keeps tracking it across steps.
    """

    def __init__(
        self,
        parameters: dict,
        decay_mask: dict,
        *,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        weight_decay: float = 0.1,
    ):
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.weight_decay = weight_decay
        self.decay_mask = decay_mask
        self.state: dict[str, Any] = {
            "step": mx.array(0, dtype=mx.int32),
            "m": tree_map(mx.zeros_like, parameters),
            "v": tree_map(mx.zeros_like, parameters),
        }

    def update(self, model: nn.Module, grads: dict, learning_rate: mx.array | float) -> None:
        model.update(self.apply_gradients(grads, model.trainable_parameters(), learning_rate))

    def apply_gradients(self, grads: dict, parameters: dict, learning_rate: mx.array | float) -> dict:
        b1, b2, lr = self.beta1, self.beta2, learning_rate
        step = self.state["step"] + 1
        correction1 = 1 - mx.power(b1, step.astype(mx.float32))
        correction2 = 1 - mx.power(b2, step.astype(mx.float32))
        step_size = lr / correction1
        root_correction2 = mx.sqrt(correction2)

        def one(p: mx.array, g: mx.array, m: mx.array, v: mx.array, decay: bool):
            if decay and self.weight_decay:
                p = p * (1 - lr * self.weight_decay)  # decoupled: before, and apart from, the Adam step
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g.square()
            p = p - step_size * m / (mx.sqrt(v) / root_correction2 + self.eps)
            return p, m, v

        triples = tree_map(one, parameters, grads, self.state["m"], self.state["v"], self.decay_mask)
        is_triple = lambda x: isinstance(x, tuple)  # noqa: E731
        self.state["m"] = tree_map(lambda t: t[1], triples, is_leaf=is_triple)
        self.state["v"] = tree_map(lambda t: t[2], triples, is_leaf=is_triple)
        self.state["step"] = step
        return tree_map(lambda t: t[0], triples, is_leaf=is_triple)

    @property
    def step(self) -> int:
        return int(self.state["step"].item())

    def flat_state(self) -> dict[str, mx.array]:
        """Flat name -> array map (`step`, `m.<param>`, `v.<param>`) for safetensors."""
        return dict(tree_flatten(self.state))

    def load_flat_state(self, flat: dict[str, mx.array], where: str = "optimizer state") -> None:
        """Restore from `flat_state()` output, checking names and shapes against the current state."""
        check_arrays(flat, self.flat_state(), where, kind="optimizer entry", needed_by="the model")
        # Refill the existing structure: unflattening would drop empty containers (dropout modules).
        self.state["step"] = flat["step"].astype(mx.int32)
        for moment in ("m", "v"):
            self.state[moment] = tree_map_with_path(
                lambda path, _: flat[path], self.state[moment], path=moment
            )
