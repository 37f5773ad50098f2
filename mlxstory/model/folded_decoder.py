"""The model's forward pass for decoding, with its weights folded into fewer, larger operations.

Decoding at batch 1 multiplies vectors, not matrices, so its cost is the number of operations MLX
dispatches, not their arithmetic: on a CPU every operation, even a view, costs 1-3 µs of
scheduling (measured on the seed preset, sampling included: 322 graph nodes and 0.8 ms per token with
the model's own forward; 189 nodes and 0.4 ms folded). Folding is exact algebra, done once per
decoder, so that each layer needs about a dozen operations:

- The residual stream is kept centred: every write into it (embeddings, attention output,
  feed-forward output) has its mean over channels subtracted in the weights. LayerNorm of a centred
  row r is r / sqrt(|r|²/C + eps) * gamma + beta, so LayerNorm followed by a linear layer becomes
  one matmul by diag(gamma) Wᵀ, one sum of squares and one fused elementwise op.
- The biases of the two residual writes ride in the matmuls: every value vector carries a trailing 1
  (attention weights sum to 1, so each head's output does too) and the feed-forward hidden layer a
  unit that is always act(1); their weight rows are the biases. Keys carry a trailing 0 so keys and
  values share one cache buffer per layer.
- The attention scale 1/sqrt(head_size) lives in the query weights.

Only fp32 rounding differs from `GPT.__call__` (tests compare logits). The same MLX operations run
on every device; the cache is one (2 * heads, context_length, head_size + 1) buffer per layer, keys
then values, written in place at the decoded positions; slots after the current position are masked.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import mlx.core as mx
import mlx.nn as nn

FoldedWeights = dict[str, Any]  # a pytree of arrays, so `mx.compile` takes it as an input


def _centred(matrix: mx.array) -> mx.array:
    """Rows of `matrix` (writes into the residual stream) with their mean over channels removed."""
    return matrix - matrix.mean(axis=-1, keepdims=True)


def _fold_norm(norm: nn.LayerNorm, weight: mx.array, bias: mx.array | None) -> tuple[mx.array, mx.array]:
    """LayerNorm then x @ weight.T + bias, on a centred x: (matrix (C, out), bias (out,))."""
    matrix = norm.weight[:, None] * weight.T
    folded_bias = norm.bias @ weight.T
    return matrix, folded_bias if bias is None else folded_bias + bias


def fold(model: Any) -> FoldedWeights:
    """The weights of `model` (a `GPT`) rearranged for `prefill` and `decode`; evaluated, a snapshot."""
    config = model.config
    heads, size = config.head_count, config.embedding_size // config.head_count
    activation = _activation(config.activation)
    always_on = activation(mx.array(1.0))  # the value of the feed-forward's constant unit
    layers = []
    for block in model.blocks:
        attention, feed_forward = block.attention, block.feed_forward
        matrix, bias = _fold_norm(block.ln1, attention.qkv.weight, attention.qkv.bias)
        # Per head, one more column: 0 for queries and keys, a constant 1 for values.
        head_scale = mx.concatenate([mx.full((heads, 1), size**-0.5), mx.ones((2 * heads, 1))])
        matrix = mx.pad(matrix.reshape(-1, 3 * heads, size) * head_scale, [(0, 0), (0, 0), (0, 1)])
        ones = mx.concatenate([mx.zeros((2 * heads, 1)), mx.ones((heads, 1))])
        bias = mx.concatenate([bias.reshape(3 * heads, size) * head_scale, ones], axis=1)
        # The output projection reads each head's trailing 1 as a bias input (bias / heads per head).
        channels = config.embedding_size
        projection = attention.proj.weight.T.reshape(heads, size, channels)
        head_bias = mx.broadcast_to(attention.proj.bias / heads, (heads, 1, channels))
        projection = mx.concatenate([projection, head_bias], axis=1)
        up, up_bias = _fold_norm(block.ln2, feed_forward.up.weight, feed_forward.up.bias)
        up_bias = mx.concatenate([up_bias, mx.ones(1)])[None]  # the constant unit's input: 1
        down = mx.concatenate([feed_forward.down.weight.T, (feed_forward.down.bias / always_on)[None]])
        layers.append({
            "qkv": {"matrix": matrix.reshape(matrix.shape[0], -1), "bias": bias.reshape(1, -1)},
            "projection": _centred(projection.reshape(heads * (size + 1), -1)),
            "up": {"matrix": mx.pad(up, [(0, 0), (0, 1)]), "bias": up_bias},
            "down": _centred(down),
        })
    head, head_bias = _fold_norm(model.final_norm, model.head.weight, None)
    slots = mx.arange(config.context_length)
    weights = {
        "tokens": _centred(model.token_embedding.weight),
        "positions": _centred(model.position_embedding.weight),
        # Row p: the additive attention mask of a token at position p (it sees slots 0..p).
        "masks": mx.where(slots[None, :] <= slots[:, None], 0.0, -mx.inf),
        "layers": layers,
        "head": {"matrix": head, "bias": head_bias[None]},
    }
    mx.eval(weights)
    return weights


def _relu(x: mx.array) -> mx.array:
    return mx.maximum(x, 0.0)


def _gelu(x: mx.array) -> mx.array:
    return x * (1 + mx.erf(x * math.sqrt(0.5))) * 0.5


def _activation(name: str) -> Callable[[mx.array], mx.array]:
    """`nn.relu` / `nn.gelu` spelled out: those are compiled functions of their own, and a compiled
    function inside `mx.compile` stays a separate operation instead of fusing with its neighbours."""
    return _relu if name == "relu" else _gelu


@dataclass(frozen=True)
class Settings:
    """The model's non-array settings that `prefill` and `decode` need (constants when compiled)."""

    head_count: int
    activation: Callable[[mx.array], mx.array]
    eps: float

    @classmethod
    def of(cls, model: Any) -> Settings:
        config = model.config
        return cls(config.head_count, _activation(config.activation), model.final_norm.eps)


def empty_cache(model: Any) -> list[mx.array]:
    """One zeroed key/value buffer per layer: (2 * heads, context_length, head_size + 1)."""
    config = model.config
    shape = (2 * config.head_count, config.context_length, config.embedding_size // config.head_count + 1)
    return [mx.zeros(shape) for _ in range(config.block_count)]


def _norm_linear(x: mx.array, layer: dict[str, mx.array], eps: float) -> mx.array:
    """LayerNorm then linear, on centred rows x (T, C), with the norm's scale and shift folded in."""
    if x.shape[0] == 1:
        # One fused kernel; it runs vectorised only if every input is a 0-d scalar or has the output's
        # shape (biases are stored as (1, out)), and strided, several times slower, otherwise.
        squares = (x @ x.T).reshape(())
        return (x @ layer["matrix"]) * mx.rsqrt(squares * (1.0 / x.shape[-1]) + eps) + layer["bias"]
    # Several rows: scale the narrower input, so the row-broadcasting kernel (slow on CPU) runs on C columns.
    rows = x * mx.rsqrt(mx.mean(x * x, axis=-1, keepdims=True) + eps)
    return mx.addmm(layer["bias"], rows, layer["matrix"])


def _residual_writes(x: mx.array, heads_out: mx.array, layer: dict[str, Any], settings: Settings) -> mx.array:
    """The attention output (rows of heads * (head_size + 1)) and the feed-forward added to x."""
    x = mx.addmm(x, heads_out, layer["projection"])
    hidden = settings.activation(_norm_linear(x, layer["up"], settings.eps))
    return mx.addmm(x, hidden, layer["down"])


def prefill(
    weights: FoldedWeights,
    tokens: mx.array,
    cache: list[mx.array],
    *,
    settings: Settings,
) -> tuple[mx.array, list[mx.array]]:
    """tokens (T,) at positions 0..T-1 -> (logits (1, vocab) after the last one, cache holding all T)."""
    T, heads, eps = tokens.shape[0], settings.head_count, settings.eps
    x = weights["tokens"][tokens] + weights["positions"][:T]
    mask = weights["masks"][:T, :T]
    updated = []
    for layer, buffer in zip(weights["layers"], cache, strict=True):
        qkv = _norm_linear(x, layer["qkv"], eps).reshape(T, 3 * heads, -1).swapaxes(0, 1)
        queries, keys, values = mx.split(qkv, 3)  # (heads, T, head_size + 1) each
        updated.append(mx.slice_update(buffer, qkv[heads:], mx.array([0]), axes=(1,)))
        scores = mx.addmm(mask, queries, keys.swapaxes(1, 2))
        # Softmax spelled out, so exp runs in a fused (vectorised) kernel; the values' trailing 1
        # makes the last column of `summed` the normaliser.
        summed = mx.exp(scores - scores.max(axis=-1, keepdims=True)) @ values
        heads_out = (summed / summed[..., -1:]).swapaxes(0, 1).reshape(T, -1)
        x = _residual_writes(x, heads_out, layer, settings)
    return _norm_linear(x[-1:], weights["head"], eps), updated


def decode(
    weights: FoldedWeights,
    token: mx.array,
    position: mx.array,
    cache: list[mx.array],
    *,
    settings: Settings,
) -> tuple[mx.array, list[mx.array]]:
    """One token (1,) at `position` (1,) -> (logits (1, vocab), cache with its key and value added).

    The cache must hold positions 0..position-1; later slots are masked out.
    """
    heads, eps = settings.head_count, settings.eps
    x = weights["tokens"][token] + weights["positions"][position]
    mask = weights["masks"][position]
    updated = []
    for layer, buffer in zip(weights["layers"], cache, strict=True):
        # (1, 3 * heads * width) -> (3 * heads, 1, width) is a reshape alone.
        qkv = _norm_linear(x, layer["qkv"], eps).reshape(3 * heads, 1, -1)
        queries, keys_values = mx.split(qkv, [heads])  # one operation, where two slices are two
        buffer = mx.slice_update(buffer, keys_values, position, axes=(1,))
        keys, values = mx.split(buffer, 2)
        scores = mx.addmm(mask, queries, keys.swapaxes(1, 2))  # (heads, 1, slots)
        heads_out = (mx.softmax(scores, axis=-1) @ values).reshape(1, -1)
        x = _residual_writes(x, heads_out, layer, settings)
        updated.append(buffer)
    return _norm_linear(x, weights["head"], eps), updated


def bind(function: Callable, model: Any) -> Callable:
    """`prefill` or `decode` with `model`'s settings bound (then compile it: they are not arrays)."""
    return partial(function, settings=Settings.of(model))
