"""The decoder: gpt-rs's architecture in one readable MLX file.

A causal pre-LN transformer with learned positions and the original's four dropouts per block
(embedding, attention weights, feed-forward output, and dropout on the residual path itself).
Device-agnostic: the same code runs on Metal, CUDA and the CPU (CPU-friendly spellings of the
training loss live in fast_path.py, outside the model; token-by-token decoding with a KV cache in
folded_decoder.py, which rearranges these weights).

Memory (docs/memory.md): three pieces have hand-written gradients that keep less for the backward
pass than autodiff would, with the same math: attention with dropout keeps q, k, v and the keep mask
instead of its (B, H, T, T) weights, ReLU keeps only its output, and the loss runs the head and the
cross-entropy over chunks of rows, so the whole batch's (B*T, vocab) logits never exist. Blocks can
also be recomputed in the backward pass (`recompute_blocks`, off unless chosen).
"""

from __future__ import annotations

import math
from functools import cache

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map_with_path

from mlxstory.formats.config import ModelConfig


def causal_mask(length: int) -> mx.array:
    """Additive mask: position i sees positions 0..i."""
    positions = mx.arange(length)
    return mx.where(positions[None, :] <= positions[:, None], 0.0, -math.inf).astype(mx.float32)


@cache
def _dropout_attention(scale: float, keep_probability: float):
    """softmax(q k^T * scale + causal) * keep / p @ v, keeping only q, k, v and `keep` for backward.

    Autodiff keeps the (B, H, T, T) weights, their dropped copy and the mask (~9 bytes a weight);
    this keeps the 1-byte mask and recomputes the weights (one q k^T matmul) in the backward pass.
    """

    def weights(q: mx.array, k: mx.array) -> mx.array:
        scores = (q * scale) @ k.transpose(0, 1, 3, 2)  # (B, H, T, T)
        return mx.softmax(scores + causal_mask(q.shape[2]), axis=-1)

    @mx.custom_function
    def attend(q, k, v, keep):
        return ((keep * weights(q, k)) * (1 / keep_probability)) @ v  # nn.Dropout's expression

    @attend.vjp
    def attend_vjp(primals, cotangent, output):
        q, k, v, keep = primals
        # Depending on the cotangent makes this a new computation: mx.compile would otherwise merge
        # it with the forward pass's (same inputs, same ops) and keep the weights after all.
        w = weights(*mx.depends([q, k], [cotangent]))
        dropped = (keep * w) * (1 / keep_probability)
        grad_v = dropped.transpose(0, 1, 3, 2) @ cotangent
        grad_w = keep * ((cotangent @ v.transpose(0, 1, 3, 2)) * (1 / keep_probability))
        grad_scores = w * (grad_w - (grad_w * w).sum(axis=-1, keepdims=True))
        grad_q = (grad_scores @ k) * scale
        grad_k = grad_scores.transpose(0, 1, 3, 2) @ (q * scale)
        return grad_q, grad_k, grad_v, mx.zeros_like(keep)

    return attend


@mx.custom_function
def relu(x: mx.array) -> mx.array:
    """`nn.relu` whose backward pass needs only its output, so its input can be freed."""
    return mx.maximum(x, 0)


@relu.vjp
def _relu_vjp(primals, cotangent, output):
    return (cotangent * (output > 0),)


def dropout(x: mx.array, keep: mx.array | None, keep_probability: float) -> mx.array:
    """nn.Dropout's expression with its mask drawn beforehand (None: no dropout)."""
    return x if keep is None else (keep * x) * (1 / keep_probability)


def draw_keep(keep_probability: float, shape: tuple[int, ...], training: bool) -> mx.array | None:
    """nn.Dropout's draw, from the same global random stream (None when off)."""
    if not training or keep_probability == 1:
        return None
    return mx.random.bernoulli(keep_probability, shape)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.head_count = config.head_count
        self.head_size = config.embedding_size // config.head_count
        self.scale = self.head_size**-0.5
        self.qkv = nn.Linear(config.embedding_size, 3 * config.embedding_size)  # q, k, v fused
        self.proj = nn.Linear(config.embedding_size, config.embedding_size)
        self.keep_probability = 1 - config.attention_dropout  # as nn.Dropout computes it

    def __call__(self, x: mx.array, keep: mx.array | None = None) -> mx.array:
        """`keep`: the (B, H, T, T) dropout mask of the weights (training), or None."""
        B, T, C = x.shape
        H, hs = self.head_count, self.head_size
        q, k, v = mx.split(self.qkv(x), 3, axis=-1)
        # (B, T, C) -> (B, H, T, hs): all heads batched in one matmul
        q, k, v = (a.reshape(B, T, H, hs).transpose(0, 2, 1, 3) for a in (q, k, v))
        if keep is not None:
            # The fused kernel has no dropout on the weights, so spell attention out.
            y = _dropout_attention(self.scale, self.keep_probability)(q, k, v, keep)
        else:
            y = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask="causal")
        return self.proj(y.transpose(0, 2, 1, 3).reshape(B, T, C))


class FeedForward(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        hidden = config.feed_forward_multiplier * config.embedding_size
        self.up = nn.Linear(config.embedding_size, hidden)
        self.down = nn.Linear(hidden, config.embedding_size)
        self.activation = relu if config.activation == "relu" else nn.gelu
        self.keep_probability = 1 - config.feed_forward_dropout

    def __call__(self, x: mx.array, keep: mx.array | None = None) -> mx.array:
        return dropout(self.down(self.activation(self.up(x))), keep, self.keep_probability)


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.embedding_size)
        self.attention = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(config.embedding_size)
        self.feed_forward = FeedForward(config)
        self.residual_keep_probability = 1 - config.residual_dropout

    def dropout_masks(self, B: int, T: int) -> list[mx.array | None]:
        """The block's four keep masks, drawn in the order its forward pass used them (residual,
        attention weights, residual, feed-forward), so a recomputed block reuses the very same."""
        C, H = self.ln1.weight.shape[0], self.attention.head_count
        return [draw_keep(self.residual_keep_probability, (B, T, C), self.training),
                draw_keep(self.attention.keep_probability, (B, H, T, T), self.training),
                draw_keep(self.residual_keep_probability, (B, T, C), self.training),
                draw_keep(self.feed_forward.keep_probability, (B, T, C), self.training)]

    def __call__(self, x: mx.array, masks: list[mx.array | None] | None = None) -> mx.array:
        if masks is None:
            masks = self.dropout_masks(*x.shape[:2])
        residual, weights, residual_again, feed_forward = masks
        # The original's form: dropout acts on the residual stream itself, not on the branch.
        x = dropout(x, residual, self.residual_keep_probability) + self.attention(self.ln1(x), weights)
        x = dropout(x, residual_again, self.residual_keep_probability) + self.feed_forward(self.ln2(x),
                                                                                            feed_forward)
        return x


class GPT(nn.Module):
    # Ids past this were never trained (a gpt-rs import has no special tokens); None: all were.
    known_vocab_size: int | None = None

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.embedding_size)
        self.position_embedding = nn.Embedding(config.context_length, config.embedding_size)
        self.embedding_dropout = nn.Dropout(config.embedding_dropout)
        self.blocks = [Block(config) for _ in range(config.block_count)]
        self.final_norm = nn.LayerNorm(config.embedding_size)
        self.head = nn.Linear(config.embedding_size, config.vocab_size, bias=False)
        # Training only: keep each block's input alone and recompute the block in the backward pass.
        self.recompute_blocks = False
        self._init_weights()

    def _init_weights(self) -> None:
        """normal(0, 0.02) for weights and embeddings, zero biases, unit LayerNorm scales."""
        init = nn.init.normal(mean=0.0, std=0.02)

        def reinit(path: str, value: mx.array) -> mx.array:
            module = path.split(".")[-2]
            if module.startswith("ln") or module == "final_norm":
                return value  # LayerNorm keeps weight=1, bias=0
            if path.endswith(".bias"):
                return mx.zeros_like(value)
            return init(value)

        self.update(tree_map_with_path(reinit, self.parameters()))

    def __call__(self, tokens: mx.array) -> mx.array:
        """(B, T) token ids -> (B, T, vocab) logits. Decoding uses folded_decoder.py (a KV cache)."""
        return self.head(self.features(tokens))

    def features(self, tokens: mx.array) -> mx.array:
        """(B, T) token ids -> (B, T, C): the normalised input of the head (what the loss needs)."""
        B, T = tokens.shape
        if T > self.config.context_length:
            raise ValueError(f"{T} positions exceed context_length {self.config.context_length}")
        x = self.embedding_dropout(self.token_embedding(tokens) + self.position_embedding(mx.arange(T)))
        recompute = self.training and self.recompute_blocks
        for block in self.blocks:
            x = _recomputed(block, x) if recompute else block(x)
        return self.final_norm(x)

    def parameter_count(self) -> int:
        return sum(v.size for _, v in tree_flatten(self.parameters()))

    def decay_mask(self) -> dict:
        """True for weight matrices of linear layers: decay those only, as the original did."""
        return tree_map_with_path(
            lambda path, v: v.ndim == 2 and "embedding" not in path, self.parameters()
        )


def cross_entropy(logits: mx.array, targets: mx.array) -> mx.array:
    """Mean token cross-entropy, as max / exp(l - m) / sum / log.

    Measured faster than `nn.losses.cross_entropy` on the CPU (234 vs 398 ms at 4096x2048) and
    equal in value; the max is a constant shift, so no gradient needs to flow through it.
    """
    shifted = logits - mx.stop_gradient(logits.max(axis=-1, keepdims=True))
    log_normalizer = mx.log(mx.exp(shifted).sum(axis=-1))
    picked = mx.take_along_axis(shifted, targets[..., None], axis=-1).squeeze(-1)
    return (log_normalizer - picked).mean()


LOSS_CHUNK_ELEMENTS = 2**20  # logits per chunk of rows: 4 MiB of fp32 at any vocabulary


@cache
def _chunked_head_loss(rows: int, chunk: int):
    """`cross_entropy(features @ weight.T, targets)` over (rows, C) features, `chunk` rows at a time.

    Neither pass holds more than one chunk's logits: the forward keeps nothing but its inputs, and
    the backward recomputes each chunk's logits (one more head matmul) for softmax - one_hot. Each
    chunk waits for the previous one (`mx.depends`), so lazy evaluation cannot run them side by side.
    """
    bounds = [(a, min(a + chunk, rows)) for a in range(0, rows, chunk)]

    def chunk_logits(features, weight, a, b, after):
        part = features[a:b] if after is None else mx.depends(features[a:b], after)
        logits = part @ weight.T
        return part, logits - mx.stop_gradient(logits.max(axis=-1, keepdims=True))

    @mx.custom_function
    def loss(features, weight, targets):
        total = after = None
        for a, b in bounds:
            _, shifted = chunk_logits(features, weight, a, b, after)
            picked = mx.take_along_axis(shifted, targets[a:b, None], axis=-1).squeeze(-1)
            after = (mx.log(mx.exp(shifted).sum(axis=-1)) - picked).sum()
            total = after if total is None else total + after
        return total / rows

    @loss.vjp
    def loss_vjp(primals, cotangent, output):
        features, weight, targets = primals
        scale = cotangent / rows
        grad_features, grad_weight, after = [], None, scale  # after the cotangent: not the forward's
        for a, b in bounds:
            part, shifted = chunk_logits(features, weight, a, b, after)
            exp = mx.exp(shifted)
            one_hot = mx.arange(weight.shape[0], dtype=targets.dtype) == targets[a:b, None]
            grad_logits = (exp / exp.sum(axis=-1, keepdims=True) - one_hot) * scale
            grad_part = grad_logits @ weight
            grad_chunk_weight = grad_logits.T @ part
            grad_features.append(grad_part)
            grad_weight = grad_chunk_weight if grad_weight is None else grad_weight + grad_chunk_weight
            after = [grad_part, grad_weight]
        return mx.concatenate(grad_features, axis=0), grad_weight, mx.zeros_like(targets)

    return loss


def head_cross_entropy(features: mx.array, weight: mx.array, targets: mx.array) -> mx.array:
    """Mean token cross-entropy of the logits `features @ weight.T`, computed in chunks of rows."""
    C, V = features.shape[-1], weight.shape[0]
    rows = features.size // C
    chunk = max(1, min(rows, LOSS_CHUNK_ELEMENTS // V))
    return _chunked_head_loss(rows, chunk)(features.reshape(rows, C), weight, targets.reshape(rows))


def loss_fn(model: GPT, inputs: mx.array, targets: mx.array) -> mx.array:
    """The training and evaluation loss: `cross_entropy(model(inputs), targets)`, in less memory."""
    return head_cross_entropy(model.features(inputs), model.head.weight, targets)


def _recomputed(block: Block, x: mx.array) -> mx.array:
    """`block(x)`, keeping only `x` and its dropout masks for the backward pass, which runs it again.

    The masks are drawn here, once, and passed in: the rerun cannot draw new ones.
    """
    masks = block.dropout_masks(*x.shape[:2])
    present = [i for i, mask in enumerate(masks) if mask is not None]

    def run(parameters, x, *given):
        chosen = [None] * len(masks)
        for i, mask in zip(present, given, strict=True):
            chosen[i] = mask
        original = block.trainable_parameters()
        block.update(parameters)
        try:
            return block(x, chosen)
        finally:
            block.update(original)  # the backward pass's rerun must not leave its inputs in the model

    return mx.checkpoint(run)(block.trainable_parameters(), x, *(masks[i] for i in present))
