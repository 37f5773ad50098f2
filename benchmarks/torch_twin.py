"""The mlxstory decoder in PyTorch, parameter for parameter, for parity tests and the benchmark.

Same config fields, same parameter names and shapes as `mlxstory/model.py` (a torch Linear's weight
is (out, in), as MLX's), so an mlxstory safetensors checkpoint loads with `load_state_dict` as is.
Imports no MLX: the benchmark runs it beside MLX in one process, and it can run alone on CUDA or MPS.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from mlxstory.formats.config import ModelConfig, TrainConfig


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.head_count = config.head_count
        self.head_size = config.embedding_size // config.head_count
        self.qkv = nn.Linear(config.embedding_size, 3 * config.embedding_size)
        self.proj = nn.Linear(config.embedding_size, config.embedding_size)
        self.attention_dropout = config.attention_dropout

    def forward(self, x: torch.Tensor, cache: list[torch.Tensor] | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=-1)
        q, k, v = (a.view(B, T, self.head_count, self.head_size).transpose(1, 2) for a in (q, k, v))
        offset = 0
        if cache is not None:  # [keys, values] of earlier positions, extended in place
            if cache:
                offset = cache[0].shape[2]
                k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
            cache[:] = [k, v]
        dropout = self.attention_dropout if self.training else 0.0
        if T == 1:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        elif offset == 0:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        else:
            rows = torch.arange(offset, offset + T, device=x.device)[:, None]
            mask = torch.arange(offset + T, device=x.device)[None, :] <= rows
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class FeedForward(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        hidden = config.feed_forward_multiplier * config.embedding_size
        self.up = nn.Linear(config.embedding_size, hidden)
        self.down = nn.Linear(hidden, config.embedding_size)
        self.activation = F.relu if config.activation == "relu" else F.gelu
        self.dropout = nn.Dropout(config.feed_forward_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(self.activation(self.up(x))))


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.embedding_size)
        self.attention = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(config.embedding_size)
        self.feed_forward = FeedForward(config)
        self.residual_dropout = nn.Dropout(config.residual_dropout)

    def forward(self, x: torch.Tensor, cache: list[torch.Tensor] | None = None) -> torch.Tensor:
        x = self.residual_dropout(x) + self.attention(self.ln1(x), cache)
        return self.residual_dropout(x) + self.feed_forward(self.ln2(x))


class TorchGPT(nn.Module):
    """`mlxstory.model.GPT` in PyTorch: `model(tokens[B, T], caches=None) -> logits[B, T, V]`."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.embedding_size)
        self.position_embedding = nn.Embedding(config.context_length, config.embedding_size)
        self.embedding_dropout = nn.Dropout(config.embedding_dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.block_count))
        self.final_norm = nn.LayerNorm(config.embedding_size)
        self.head = nn.Linear(config.embedding_size, config.vocab_size, bias=False)
        for name, parameter in self.named_parameters():  # as mlxstory: normal(0, 0.02), zero biases
            if name.endswith(".bias"):
                nn.init.zeros_(parameter)
            elif "ln" not in name and "final_norm" not in name:
                nn.init.normal_(parameter, 0.0, 0.02)

    def forward(self, tokens: torch.Tensor, caches: list[list[torch.Tensor]] | None = None) -> torch.Tensor:
        B, T = tokens.shape
        offset = caches[0][0].shape[2] if caches and caches[0] else 0
        positions = torch.arange(offset, offset + T, device=tokens.device)
        x = self.embedding_dropout(self.token_embedding(tokens) + self.position_embedding(positions))
        for i, block in enumerate(self.blocks):
            x = block(x, None if caches is None else caches[i])
        return self.head(self.final_norm(x))

    def make_caches(self) -> list[list[torch.Tensor]]:
        return [[] for _ in self.blocks]

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def load_weights(model: TorchGPT, path: str | Path) -> None:
    """Load an mlxstory weights file (`mx.save_safetensors` of the flattened parameters)."""
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    device = next(model.parameters()).device
    model.load_state_dict({name: t.to(device) for name, t in tensors.items()}, strict=True)


def make_optimizer(model: TorchGPT, config: TrainConfig, learning_rate: float) -> torch.optim.AdamW:
    """torch AdamW with mlxstory's groups: decay on 2-D non-embedding weights only."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        (decay if parameter.ndim == 2 and "embedding" not in name else no_decay).append(parameter)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=learning_rate, betas=tuple(config.betas), eps=1e-8,
    )


def train_step(
    model: TorchGPT, optimizer: torch.optim.Optimizer, inputs: torch.Tensor, targets: torch.Tensor,
    grad_clip: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """forward + backward + clip + AdamW, as mlxstory's compiled step; returns (loss, pre-clip norm)."""
    optimizer.zero_grad(set_to_none=True)
    loss = cross_entropy(model(inputs), targets)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else math.inf)
    optimizer.step()
    return loss.detach(), norm


@torch.no_grad()
def generate_tokens(model: TorchGPT, context: list[int]) -> Iterator[int]:
    """Greedy KV-cached decoding at batch 1, the twin of mlxstory's cached decoder (no window slide:
    the caller stays within `context_length`)."""
    model.eval()
    device = next(model.parameters()).device
    caches = model.make_caches()
    logits = model(torch.tensor([context], device=device), caches)[:, -1]
    while True:
        token = int(logits.argmax(dim=-1).item())
        yield token
        logits = model(torch.tensor([[token]], device=device), caches)[:, -1]
