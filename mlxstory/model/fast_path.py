"""A CPU-friendly formulation of the training loss: same parameters, same math, fewer slow kernels.

On x86 Linux, MLX's own CPU kernels for softmax, exp and random bits are scalar and single-threaded,
while `mx.compile` fuses chains of elementwise ops into vectorised JIT C++. This module writes the
model's forward pass so that nearly all non-matmul work lands in such fused kernels:

- softmax (attention and cross-entropy) spelled as max / exp / sum, so it fuses with the scale,
  the causal mask and the dropout that surround it;
- LayerNorm as mean / variance arithmetic instead of the `fast` op (a plain-op fallback on CPU);
- dropout masks from a counter-based integer hash (murmur3's finaliser) seeded once per call
  from `mx.random`, instead of one threefry draw per element.

With dropout off the loss and gradients equal `model.loss_fn` to fp32 rounding (tests/test_fast_path.py);
with dropout on, masks differ from `nn.Dropout`'s draws but keep its distribution (keep probability
1 - p, kept values scaled by 1 / (1 - p)). GPUs keep the plain path: `training_loss_fn` picks.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_map

from mlxstory import cpu_speedups
from mlxstory.model.gpt import GPT, loss_fn

_GOLDEN = 0x9E3779B9


def _fmix32(h: mx.array) -> mx.array:
    """murmur3's 32-bit finaliser: full avalanche in five integer ops."""
    h = h ^ (h >> 16)
    h = h * 0x85EBCA6B
    h = h ^ (h >> 13)
    h = h * 0xC2B2AE35
    return h ^ (h >> 16)


def hashed_dropout(x: mx.array, p: float, seed: mx.array) -> mx.array:
    """Dropout whose keep mask is hash(element index, seed) >= p * 2**32; `seed` is a uint32 pair."""
    if p <= 0:
        return x
    index = mx.arange(x.size, dtype=mx.uint32).reshape(x.shape)
    bits = _fmix32((index * _GOLDEN + seed[0]) ^ seed[1])
    threshold = min(int(round(p * 2**32)), 2**32 - 1)
    return mx.where(bits >= threshold, x * (1.0 / (1.0 - p)), 0.0)


class _Seeds:
    """Hands out a fresh uint32 pair per dropout site from one `mx.random` draw per forward pass."""

    def __init__(self, count: int):
        self.words = mx.random.randint(0, 2**31 - 1, (count, 2)).astype(mx.uint32) if count else None
        self.next = 0

    def take(self) -> mx.array:
        seed = self.words[self.next : self.next + 1].reshape(2)
        self.next += 1
        return seed


def _row_sum(x: mx.array) -> mx.array:
    """`x.sum(axis=-1, keepdims=True)` as a matrix-vector product.

    MLX's CPU reduction along the last axis is scalar code; MKL's gemv is 4-6x faster at these
    sizes. The same sum, in another order (fp32 rounding only).
    """
    n = x.shape[-1]
    return (x.reshape(-1, n) @ mx.ones((n, 1), dtype=x.dtype)).reshape(*x.shape[:-1], 1)


def _row_mean(x: mx.array) -> mx.array:
    return _row_sum(x) * (1.0 / x.shape[-1])


def _row_max(x: mx.array, group: int = 16) -> mx.array:
    """`x.max(axis=-1, keepdims=True)`, exactly, 2-5x faster on the CPU: first a max across groups
    of `group` columns (a strided reduction, which MLX vectorises), then within the last group."""
    n = x.shape[-1]
    if n % group or n == group:
        return x.max(axis=-1, keepdims=True)
    return x.reshape(*x.shape[:-1], n // group, group).max(axis=-2).max(axis=-1, keepdims=True)


def _normalize(x: mx.array, eps: float = 1e-5) -> tuple[mx.array, mx.array]:
    centered = x - _row_mean(x)
    inverse_std = mx.rsqrt(_row_mean(centered * centered) + eps)
    return centered * inverse_std, inverse_std


@mx.custom_function
def _layer_norm(x: mx.array, weight: mx.array, bias: mx.array) -> mx.array:
    """LayerNorm over the last axis (eps 1e-5, as nn.LayerNorm), with a closed-form gradient."""
    return _normalize(x)[0] * weight + bias


@_layer_norm.vjp
def _layer_norm_vjp(primals, cotangent, output):
    x, weight, _ = primals
    normalized, inverse_std = _normalize(x)
    g = cotangent * weight
    grad_x = inverse_std * (g - _row_mean(g) - normalized * _row_mean(g * normalized))
    rows = cotangent.reshape(-1, cotangent.shape[-1])
    grad_weight = (rows * normalized.reshape(rows.shape)).sum(axis=0)
    return grad_x, grad_weight, rows.sum(axis=0)


def _linear(x: mx.array, layer, bias: bool = True) -> mx.array:
    if bias:
        return mx.addmm(layer.bias, x, layer.weight.T)
    return x @ layer.weight.T


@mx.custom_function
def _softmax(scores: mx.array) -> mx.array:
    """Softmax over the last axis, with the closed-form gradient (one row sum instead of autodiff's)."""
    exp = mx.exp(scores - _row_max(scores))
    return exp / _row_sum(exp)


@_softmax.vjp
def _softmax_vjp(primals, cotangent, output):
    return (output * (cotangent - _row_sum(cotangent * output)),)


def fast_forward(model: GPT, tokens: mx.array) -> mx.array:
    """(B, T) tokens -> (B, T, vocab) logits, in training or eval mode as `model.training` says."""
    config = model.config
    B, T = tokens.shape
    C, H = config.embedding_size, config.head_count
    hs = C // H
    training = model.training
    p_embed, p_attn, p_ff, p_res = (
        (config.embedding_dropout, config.attention_dropout, config.feed_forward_dropout,
         config.residual_dropout) if training else (0.0, 0.0, 0.0, 0.0)
    )
    sites = (p_embed > 0) + config.block_count * (2 * (p_res > 0) + (p_attn > 0) + (p_ff > 0))
    seeds = _Seeds(int(sites))

    def dropout(x: mx.array, p: float) -> mx.array:
        return hashed_dropout(x, p, seeds.take()) if p > 0 else x

    x = model.token_embedding.weight[tokens] + model.position_embedding.weight[:T]
    x = dropout(x, p_embed).reshape(B * T, C)
    # Additive causal mask, shared by all layers: query i sees keys 0..i.
    mask = mx.triu(mx.full((T, T), -mx.inf, dtype=mx.float32), k=1)
    for block in model.blocks:
        attention = block.attention
        h = _layer_norm(x, block.ln1.weight, block.ln1.bias)
        # Split, not index: integer indexing differentiates through a scatter.
        qkv = mx.split(_linear(h, attention.qkv).reshape(B, T, 3, H, hs), 3, axis=2)
        q, k, v = (a.squeeze(2).transpose(0, 2, 1, 3) for a in qkv)  # (B, H, T, hs)
        weights = _softmax((q * attention.scale) @ k.transpose(0, 1, 3, 2) + mask)  # (B, H, T, T)
        y = (dropout(weights, p_attn) @ v).transpose(0, 2, 1, 3).reshape(B * T, C)
        x = dropout(x, p_res) + _linear(y, attention.proj)
        feed_forward = block.feed_forward
        h = _layer_norm(x, block.ln2.weight, block.ln2.bias)
        h = feed_forward.activation(_linear(h, feed_forward.up))
        x = dropout(x, p_res) + dropout(_linear(h, feed_forward.down), p_ff)
    x = _layer_norm(x, model.final_norm.weight, model.final_norm.bias)
    return _linear(x, model.head, bias=False).reshape(B, T, -1)


@mx.custom_function
def fused_cross_entropy(logits: mx.array, targets: mx.array) -> mx.array:
    """`model.cross_entropy` for (N, V) logits, with a hand-written gradient.

    Autodiff of take_along_axis scatters into a zero (N, V) array and keeps exp unfused; the
    closed form softmax - one_hot is one fused pass over the logits.
    """
    maximum = _row_max(logits)
    # exp(logits - max) as its own expression so the subtraction and exp fuse into one kernel.
    log_normalizer = mx.log(_row_sum(mx.exp(logits - maximum))) + maximum
    picked = mx.take_along_axis(logits, targets[:, None], axis=-1)
    return (log_normalizer - picked).mean()


@fused_cross_entropy.vjp
def _fused_cross_entropy_vjp(primals, cotangent, output):
    logits, targets = primals
    exp = mx.exp(logits - _row_max(logits))
    one_hot = mx.arange(logits.shape[-1], dtype=targets.dtype) == targets[:, None]
    scale = cotangent / logits.shape[0]
    grad = (exp * (1.0 / _row_sum(exp)) - one_hot) * scale
    return grad, mx.zeros_like(targets)


def fast_loss_fn(model: GPT, inputs: mx.array, targets: mx.array) -> mx.array:
    """Drop-in for `model.loss_fn` (same signature, same value with dropout off)."""
    logits = fast_forward(model, inputs)
    return fused_cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def use_fast_path(device: mx.Device | mx.DeviceType | None = None) -> bool:
    """The fused formulation pays off on the CPU; Metal and CUDA keep the plain modules."""
    device = device if device is not None else mx.default_device()
    return getattr(device, "type", device) == mx.cpu


LossFn = Callable[[GPT, mx.array, mx.array], mx.array]


def training_loss_fn(device: mx.Device | mx.DeviceType | None = None) -> LossFn:
    """The loss to differentiate in a training step on `device` (default: MLX's default device)."""
    return fast_loss_fn if use_fast_path(device) else loss_fn


def set_blas_threads(count: int) -> bool:
    """Threads for the MKL that MLX calls on Linux (not PyTorch's own copy); False without MKL."""
    library = cpu_speedups.REPORT.blas_library
    if not library or "mkl" not in library:
        return False
    ctypes.CDLL(library).MKL_Set_Num_Threads(ctypes.c_int(count))
    return True


@contextmanager
def blas_threads(count: int) -> Iterator[None]:
    """MKL at `count` threads inside the block, its previous count restored after (process-wide
    while it lasts). Batch-1 generation runs best at one: its GEMVs are too small to split, and
    idle OpenMP threads spin on the cores MLX's own threads need. A no-op without MKL."""
    library = cpu_speedups.REPORT.blas_library
    if not library or "mkl" not in library:
        yield
        return
    mkl = ctypes.CDLL(library)
    previous = mkl.MKL_Get_Max_Threads()
    mkl.MKL_Set_Num_Threads(ctypes.c_int(count))
    try:
        yield
    finally:
        mkl.MKL_Set_Num_Threads(ctypes.c_int(previous))


def keep_freed_memory() -> bool:
    """Stop glibc returning big freed buffers to the OS (and faulting them back in every step).

    MLX allocates each intermediate afresh; above glibc's mmap threshold every one is a new mapping
    whose pages fault in on first touch (~10% of a CPU step). Process-wide; Linux/glibc only.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # noqa: N806  (glibc's names)
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**30))


def cpu_workers() -> int:
    """Physical cores, the number of CPU streams the batch is split over."""
    override = os.environ.get("MLXSTORY_CPU_STREAMS")
    if override:
        return max(1, int(override))
    count = os.cpu_count() or 1
    try:
        cores = {line.split(":")[1].strip() for line in open("/proc/cpuinfo") if line.startswith("core id")}
        count = min(count, len(cores)) if cores else count
    except OSError:
        pass
    return count


def training_value_and_grad(model: GPT, device: mx.Device | mx.DeviceType | None = None):
    """`nn.value_and_grad(model, loss_fn)` for a training step on `device`, as fast as that device allows.

    On the CPU: the fused loss, with the batch split across one MLX CPU stream per physical core
    (each stream is a thread, so the elementwise work MLX runs single-threaded uses every core) and
    MKL at one thread per stream. The parts' losses and gradients are averaged weighted by their
    size, so the result is the whole batch's mean. Elsewhere, and whenever the model recomputes its
    blocks in the backward pass (only the plain modules do): the plain loss, unchanged.
    Called with (model, inputs[B, T], targets[B, T]) -> (loss, grads), inside `mx.compile` or not.
    """
    if model.recompute_blocks or not use_fast_path(device):
        return nn.value_and_grad(model, loss_fn)
    value_and_grad = nn.value_and_grad(model, fast_loss_fn)
    workers = cpu_workers()
    if workers == 1:
        return value_and_grad
    keep_freed_memory()
    set_blas_threads(1)
    streams = [mx.default_stream(mx.cpu)] + [mx.new_stream(mx.cpu) for _ in range(workers - 1)]

    def split_value_and_grad(model: GPT, inputs: mx.array, targets: mx.array):
        B = inputs.shape[0]
        bounds = [B * i // workers for i in range(workers + 1)]
        # The first stream alone runs what follows the parts (gradient mean, clip, AdamW), so it
        # hands one row in 32 of its share to the last (seed preset: 31/33 rows, ~2.5% faster step).
        shift = B // (32 * workers)
        bounds[1:-1] = [bound - shift for bound in bounds[1:-1]]
        parts = [(bounds[i], bounds[i + 1]) for i in range(workers) if bounds[i + 1] > bounds[i]]
        losses, grads, weights = [], [], []
        for i, (a, b) in enumerate(parts):
            with mx.stream(streams[i]):
                loss, grad = value_and_grad(model, inputs[a:b], targets[a:b])
            losses.append(loss)
            grads.append(grad)
            weights.append((b - a) / B)

        def mean(*values: mx.array) -> mx.array:
            return sum(w * v for w, v in zip(weights, values, strict=True))

        return mean(*losses), tree_map(mean, *grads)

    return split_value_and_grad
