"""MLX and PyTorch, each on its best device, behind one small interface the runner times.

Both sides train the same preset model from the same weights with the same recipe (forward, backward,
global-norm clip, AdamW with decay on weight matrices) and decode greedily with a KV cache at batch 1.
MLX runs mlxstory's own pieces: on the CPU the fused loss of `mlxstory.model.fast_path`, elsewhere the
plain model; PyTorch runs the twin in `torch_twin.py`, eager.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import mlxstory  # noqa: F401  isort: skip  (loads MKL before mlx.core)
import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from mlxstory.formats.config import ModelConfig, TrainConfig
from mlxstory.generation.generate import generate_tokens
from mlxstory.generation.sampling import make_sampler
from mlxstory.model import GPT, fast_path, loss_fn
from mlxstory.training.optimizer import AdamW, clip_by_global_norm

LEARNING_RATE = 1e-4  # small, so thirty-odd timed steps never diverge


def physical_cores() -> int:
    """Physical cores (not SMT threads): the thread count PyTorch does best with."""
    if platform.system() == "Darwin":
        try:
            return int(os.popen("sysctl -n hw.physicalcpu").read().strip())
        except ValueError:
            return os.cpu_count() or 1
    try:
        pairs = set()
        physical = core = None
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("physical id"):
                physical = line.split(":")[1].strip()
            elif line.startswith("core id"):
                core = line.split(":")[1].strip()
                pairs.add((physical, core))
        return len(pairs) or os.cpu_count() or 1
    except OSError:
        return os.cpu_count() or 1


@dataclass
class Batch:
    inputs: np.ndarray  # (B, T) int32
    targets: np.ndarray


def make_batch(model_config: ModelConfig, batch_size: int, seed: int = 0) -> Batch:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, model_config.vocab_size, size=(batch_size, model_config.context_length + 1))
    tokens = tokens.astype(np.int32)
    return Batch(tokens[:, :-1], tokens[:, 1:])


def training_step(model: GPT, optimizer: AdamW, value_and_grad, clip: float, compiled: bool = True):
    """(inputs, targets, lr) -> (loss, pre-clip norm), updating model and optimizer in place: as
    mlxstory.training.train.make_train_step with one micro-batch, on the loss given."""

    def step(inputs: mx.array, targets: mx.array, lr: mx.array):
        loss, grads = value_and_grad(model, inputs, targets)
        grads, norm = clip_by_global_norm(grads, clip)
        optimizer.update(model, grads, lr)
        return loss, norm

    state = [model.state, optimizer.state, mx.random.state]
    return partial(mx.compile, inputs=state, outputs=state)(step) if compiled else step


class MLXSide:
    framework = "mlx"

    def __init__(self, model_config: ModelConfig, train_config: TrainConfig, weights: Path, batch: Batch,
                 plain: bool = False):
        """`plain`: MLX's device-agnostic path even on the CPU (what Metal and CUDA run)."""
        self.device = "gpu" if mx.is_available(mx.gpu) else "cpu"
        mx.set_default_device(mx.gpu if self.device == "gpu" else mx.cpu)
        fast = fast_path.use_fast_path() and not plain
        self.path = f"fused CPU loss, {fast_path.cpu_workers()} CPU streams" if fast else "plain"
        model = GPT(model_config)
        model.load_weights(str(weights))
        model.train()
        optimizer = AdamW(model.trainable_parameters(), model.decay_mask(), betas=train_config.betas,
                          weight_decay=train_config.weight_decay)
        if fast:
            value_and_grad = fast_path.training_value_and_grad(model)
        else:
            value_and_grad = nn.value_and_grad(model, loss_fn)
        step = training_step(model, optimizer, value_and_grad, train_config.grad_clip)
        self.model, self.optimizer, self._step = model, optimizer, step
        self.inputs, self.targets = mx.array(batch.inputs), mx.array(batch.targets)
        self.lr = mx.array(LEARNING_RATE, dtype=mx.float32)
        mx.eval(self.model.parameters(), self.optimizer.state, self.inputs, self.targets)

    def train_step(self) -> float:
        loss, norm = self._step(self.inputs, self.targets, self.lr)
        mx.eval(loss, norm, self.model.parameters(), self.optimizer.state)
        return loss.item()

    def reset_peak_memory(self) -> None:
        mx.reset_peak_memory()

    def peak_memory(self) -> int | None:
        return int(mx.get_peak_memory())

    def generate(self, context: list[int], count: int) -> float:
        """Tokens per second for `count` greedy tokens after the prompt (prefill not counted)."""
        stream = generate_tokens(self.model, context, sampler=make_sampler(0.0), key=mx.random.key(0))
        next(stream)
        start = time.perf_counter()
        for _ in range(count):
            next(stream)
        seconds = time.perf_counter() - start
        self.model.train()
        return count / seconds


class TorchSide:
    framework = "pytorch"

    def __init__(self, model_config: ModelConfig, train_config: TrainConfig, weights: Path, batch: Batch):
        import torch

        from . import torch_twin

        self.torch = torch
        if torch.cuda.is_available():
            self.device = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            self.device = "mps"
        else:
            self.device = "cpu"
            torch.set_num_threads(physical_cores())
        self.path = "eager"
        self.twin = torch_twin
        model = torch_twin.TorchGPT(model_config).to(self.device)
        torch_twin.load_weights(model, weights)
        model.train()
        self.model = model
        self.optimizer = torch_twin.make_optimizer(model, train_config, LEARNING_RATE)
        self.clip = train_config.grad_clip
        self.inputs = torch.from_numpy(batch.inputs.astype(np.int64)).to(self.device)
        self.targets = torch.from_numpy(batch.targets.astype(np.int64)).to(self.device)

    def synchronize(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()
        elif self.device == "mps":
            self.torch.mps.synchronize()

    def train_step(self) -> float:
        self.model.train()
        loss, _ = self.twin.train_step(self.model, self.optimizer, self.inputs, self.targets, self.clip)
        value = loss.item()  # waits for the device
        self.synchronize()
        return value

    def reset_peak_memory(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.reset_peak_memory_stats()

    def peak_memory(self) -> int | None:
        if self.device == "cuda":
            return int(self.torch.cuda.max_memory_allocated())
        if self.device == "mps":
            return int(self.torch.mps.driver_allocated_memory())  # the driver's total now, not a peak
        return None  # PyTorch's CPU allocator keeps no statistics: the runner measures a child's RSS

    def generate(self, context: list[int], count: int) -> float:
        stream = self.twin.generate_tokens(self.model, context)
        next(stream)
        start = time.perf_counter()
        for _ in range(count):
            next(stream)
        self.synchronize()
        seconds = time.perf_counter() - start
        self.model.train()
        return count / seconds


def shared_weights(model_config: ModelConfig, folder: Path, seed: int = 0) -> Path:
    """Initial weights both frameworks load, written as an mlxstory checkpoint would be."""
    mx.random.seed(seed)
    with mx.stream(mx.cpu):
        model = GPT(model_config)
        path = folder / "weights.safetensors"
        mx.save_safetensors(str(path), dict(tree_flatten(model.parameters())))
    return path


def temporary_folder() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="mlxstory-bench-")
