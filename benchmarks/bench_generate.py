"""Generation speed at batch 1: the KV-cached decoder against the original's full-window recompute.

    python -m benchmarks.bench_generate [--preset seed] [--tokens 256] [--repeats 5]

Random-init weights (speed does not depend on what the weights say). Both modes run in the same
process, interleaved, each repeat timing `--tokens` new tokens after a warm-up token; the best repeat
counts, because the machine is shared and a busy neighbour only ever makes a run slower. With
`--tokens` above the context length the cached numbers include the cost of its slides. Prints JSON,
with the machine's state beside the speeds: the load average, and `dispatch_us_per_op`, what one tiny MLX
operation costs (a chain of 300 adds). The cached path is bound by that cost, so it tells a quiet host
(about 3 µs here) from one where handing work between cores has become slow.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import mlxstory  # noqa: F401  isort: skip  (loads MKL before mlx.core)
import mlx.core as mx

from mlxstory.formats.config import load_preset
from mlxstory.generation.generate import generate_tokens
from mlxstory.generation.sampling import make_sampler
from mlxstory.model import GPT

MODES = ("cached", "recompute")


def tokens_per_second(model: GPT, mode: str, count: int, *, slide_keep: int | None, seed: int) -> float:
    stream = generate_tokens(model, [0], sampler=make_sampler(1.0), key=mx.random.key(seed), mode=mode,
                             slide_keep=slide_keep)
    next(stream)  # prefill, and for "cached" the one-off trace of the compiled step
    start = time.perf_counter()
    for _ in range(count):
        next(stream)
    return count / (time.perf_counter() - start)


def dispatch_us_per_op(ops: int = 300, repeats: int = 20, warmup: int = 30) -> float:
    """Best time per operation of a chain of tiny adds, evaluated at once (after warm-up chains: the
    first ones in a process also pay for MLX's allocator and worker thread starting)."""
    x0 = mx.zeros((1, 128))
    mx.eval(x0)
    best = float("inf")
    for i in range(warmup + repeats):
        start = time.perf_counter()
        x = x0
        for _ in range(ops):
            x = x + 1
        mx.eval(x)
        if i >= warmup:
            best = min(best, time.perf_counter() - start)
    return best / ops * 1e6


def run(preset: str, count: int, repeats: int, slide_keep: int | None) -> dict:
    dispatch_before = dispatch_us_per_op()
    config, _ = load_preset(preset)
    mx.random.seed(0)
    model = GPT(config)
    model.eval()
    mx.eval(model.parameters())
    samples: dict[str, list[float]] = {mode: [] for mode in MODES}
    for repeat in range(repeats):
        for mode in MODES:
            samples[mode].append(tokens_per_second(model, mode, count, slide_keep=slide_keep, seed=repeat))
    best = {mode: max(values) for mode, values in samples.items()}
    return {
        "benchmark": "generate",
        "preset": preset,
        "parameters": model.parameter_count(),
        "context_length": config.context_length,
        "slide_keep": slide_keep if slide_keep is not None else max(1, config.context_length // 2),
        "batch_size": 1,
        "new_tokens": count,
        "repeats": repeats,
        "device": str(mx.default_device()),
        "mlx": mx.__version__,
        "machine": platform.machine(),
        "cached_tokens_per_second": round(best["cached"], 1),
        "recompute_tokens_per_second": round(best["recompute"], 1),
        "speedup": round(best["cached"] / best["recompute"], 2),
        "all_tokens_per_second": {mode: [round(v, 1) for v in values] for mode, values in samples.items()},
        "dispatch_us_per_op": {"before": round(dispatch_before, 2), "after": round(dispatch_us_per_op(), 2)},
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="seed", help="model preset (default: seed, the original's)")
    parser.add_argument("--tokens", type=int, default=256, help="new tokens timed per repeat")
    parser.add_argument("--repeats", type=int, default=5, help="repeats per mode; the best counts")
    parser.add_argument("--slide-keep", type=int, default=None,
                        help="tokens the cache keeps when it slides (default: half the context)")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.preset, args.tokens, args.repeats, args.slide_keep), indent=2))


if __name__ == "__main__":
    main()
