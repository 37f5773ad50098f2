"""One framework's training step alone in this process, for its memory: `python -m benchmarks.memory_child`.

Resident memory is per process, so the runner measures each framework (and MLX's plain path) in a
child of its own: build the model, optimizer and batch, note the resident set, reset its high-water
mark, run the steps, and report the growth (VmHWM - VmRSS before the first step; on macOS the
lifetime peak, ru_maxrss, stands in for the high-water mark). The growth covers what the steps add:
activations, gradients, optimizer moments and whatever the allocator keeps. MLX's own allocator peak
(`mx.get_peak_memory`) comes with it. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
from pathlib import Path

from mlxstory.formats.config import load_preset

from .frameworks import MLXSide, TorchSide, make_batch, shared_weights, temporary_folder


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def resident_bytes() -> int:
    kib = _status_kib("VmRSS")
    if kib is not None:
        return kib * 1024
    return peak_resident_bytes()  # macOS: no /proc; the peak so far is the best available figure


def reset_peak_resident() -> bool:
    """Linux: writing 5 to clear_refs resets VmHWM to the current resident set."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_resident_bytes() -> int:
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if platform.system() == "Darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def measure(preset: str, framework: str, plain: bool, batch_size: int | None, steps: int) -> dict:
    model_config, train_config = load_preset(preset)
    batch = make_batch(model_config, batch_size or train_config.contexts_per_batch)
    with temporary_folder() as folder:
        weights = shared_weights(model_config, Path(folder))
        if framework == "mlx":
            side = MLXSide(model_config, train_config, weights, batch, plain=plain)
        else:
            side = TorchSide(model_config, train_config, weights, batch)
    before = resident_bytes()
    exact = reset_peak_resident()
    side.reset_peak_memory()
    for _ in range(steps):
        side.train_step()
    return {
        "framework": framework, "path": side.path, "device": side.device, "preset": preset,
        "rss_before_bytes": before, "rss_growth_bytes": max(0, peak_resident_bytes() - before),
        "rss_peak_reset": exact, "allocator_peak_bytes": side.peak_memory(), "steps": steps,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory_child")
    parser.add_argument("--preset", required=True)
    parser.add_argument("--framework", choices=["mlx", "pytorch"], required=True)
    parser.add_argument("--plain", action="store_true", help="MLX's plain (device-agnostic) path")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.preset, args.framework, args.plain, args.batch_size, args.steps)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
