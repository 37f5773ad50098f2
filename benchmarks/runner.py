"""Time both frameworks on each preset in one process, interleaved, and collect one JSON document.

Training steps alternate MLX, PyTorch, PyTorch, MLX, ... after a warm-up (compilation, allocator
growth), so a neighbour's load spike lands on both; each framework's median and best step are kept,
and the spread (best to worst) says how noisy the machine was.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from mlxstory.formats.config import load_preset

from .frameworks import MLXSide, TorchSide, make_batch, physical_cores, shared_weights, temporary_folder
from .report import label

SIDES = {"mlx": MLXSide, "pytorch": TorchSide}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cpu_name() -> str:
    if platform.system() == "Darwin":
        return os.popen("sysctl -n machdep.cpu.brand_string").read().strip() or platform.processor()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def machine_info() -> dict:
    import mlx.core as mx

    from mlxstory import cpu_speedups

    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_name(),
        "physical_cores": physical_cores(),
        "logical_cpus": os.cpu_count(),
        "gpu": gpu_name(),
        "python": platform.python_version(),
        "mlx": mx.__version__,
        "mlx_blas": cpu_speedups.REPORT.blas_library,
        "mlx_jit_flag_wrapper": cpu_speedups.REPORT.jit_wrapper is not None,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch"] = None
    return info


def machine_tag(info: dict) -> str:
    """A folder name for this machine's results, e.g. linux-x86_64-2core or linux-nvidia-h100."""
    system = "macos" if platform.system() == "Darwin" else platform.system().lower()
    if info.get("gpu"):
        name = info["gpu"].lower().replace("nvidia", "").strip().split()
        return f"{system}-nvidia-{'-'.join(name[:2])}"
    if system == "macos":
        chip = info["cpu"].lower().replace("apple", "").strip().replace(" ", "-")
        return f"macos-apple-{chip}"
    return f"{system}-{info['machine']}-{info['physical_cores']}core"


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_preset(preset: str, frameworks: list[str], steps: int, warmup: int, generate_count: int,
                 batch_size: int | None = None) -> list[dict]:
    model_config, train_config = load_preset(preset)
    batch_size = batch_size or train_config.contexts_per_batch
    tokens_per_step = batch_size * model_config.context_length
    batch = make_batch(model_config, batch_size)
    with temporary_folder() as folder:
        weights = shared_weights(model_config, Path(folder))
        sides = [SIDES[name](model_config, train_config, weights, batch) for name in frameworks]
        if "mlx" in frameworks and sides[frameworks.index("mlx")].path != "plain":
            # On the CPU, also MLX's device-agnostic path: the row that predicts Metal.
            sides.append(MLXSide(model_config, train_config, weights, batch, plain=True))
    log(f"[{preset}] {batch_size}x{model_config.context_length} tokens per step; "
        + ", ".join(f"{s.framework} on {s.device} ({s.path})" for s in sides))

    for side in sides:
        started = time.perf_counter()
        for _ in range(warmup):
            side.train_step()
        log(f"[{preset}] {side.framework}: warm-up {warmup} steps in {time.perf_counter() - started:.1f}s")
        side.reset_peak_memory()

    times: dict[str, list[float]] = {_name(side): [] for side in sides}
    for step in range(steps):
        order = sides if step % 2 == 0 else sides[::-1]
        for side in order:
            times[_name(side)].append(_time(side.train_step))
        if (step + 1) % max(1, steps // 5) == 0:
            log(f"[{preset}] step {step + 1}/{steps}: " + ", ".join(
                f"{name} {statistics.median(t) * 1000:.0f} ms" for name, t in times.items()))

    results = []
    for side in sides:
        generate_rates = []
        context = [1, 2, 3, 4]
        count = min(generate_count, model_config.context_length - len(context) - 1)
        for _ in range(3):
            generate_rates.append(side.generate(context, count))
        t = sorted(times[_name(side)])
        memory = _memory(side, preset, batch_size)
        median = statistics.median(t)
        results.append({
            "framework": side.framework,
            "device": side.device,
            "preset": preset,
            "path": side.path,
            "batch_size": batch_size,
            "context_length": model_config.context_length,
            "tokens_per_step": tokens_per_step,
            "train_tokens_per_second": tokens_per_step / median,
            "train_ms_per_step": median * 1000,
            "train_ms_per_step_best": t[0] * 1000,
            "train_ms_per_step_worst": t[-1] * 1000,
            "train_tokens_per_second_best": tokens_per_step / t[0],
            "generate_tokens_per_second": max(generate_rates),
            "generate_tokens": count,
            **memory,
            "steps": steps,
            "warmup_steps": warmup,
        })
        log(f"[{preset}] {_name(side)}: {results[-1]['train_tokens_per_second']:.0f} train tok/s "
            f"(median of {steps}), {results[-1]['generate_tokens_per_second']:.0f} generate tok/s")
    return results


def _name(side) -> str:
    return label({"framework": side.framework, "path": side.path, "device": side.device})


MEMORY_KINDS = {
    "mlx": "allocator peak (mx.get_peak_memory) during the timed steps",
    "cuda": "allocator peak (torch.cuda.max_memory_allocated) during the timed steps",
    "mps": "the MPS driver's allocated memory after the steps (torch.mps.driver_allocated_memory), "
           "not a peak",
    "rss": "resident-set growth of a child process running this framework's step alone "
           "(VmHWM - VmRSS before)",
}


def child_memory(preset: str, framework: str, plain: bool, batch_size: int, steps: int = 2) -> dict | None:
    """Run one framework's step in a child process of its own and return its memory report."""
    package = __package__ or "benchmarks"
    command = [sys.executable, "-m", f"{package}.memory_child", "--preset", preset,
               "--framework", framework, "--batch-size", str(batch_size), "--steps", str(steps)]
    command += ["--plain"] if plain else []
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        log(f"[{preset}] memory child for {framework} failed: {done.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def _memory(side, preset: str, batch_size: int) -> dict:
    """peak_memory_bytes and what it is. On the CPU each framework's step runs alone in a child process
    (resident memory is per process): PyTorch's figure is its RSS growth, MLX's its allocator peak, and
    both carry the RSS growth too."""
    if side.device == "cpu":
        report = child_memory(preset, side.framework, side.path == "plain", batch_size)
        rss = report["rss_growth_bytes"] if report else None
        if side.framework == "mlx":
            peak = report["allocator_peak_bytes"] if report else side.peak_memory()
            return {"peak_memory_bytes": peak, "rss_growth_bytes": rss,
                    "rss_growth_kind": MEMORY_KINDS["rss"],
                    "peak_memory_kind": MEMORY_KINDS["mlx"] + ", in a child process"}
        return {"peak_memory_bytes": rss, "peak_memory_kind": MEMORY_KINDS["rss"], "rss_growth_bytes": rss,
                "rss_growth_kind": MEMORY_KINDS["rss"]}
    kind = MEMORY_KINDS["mlx"] if side.framework == "mlx" else MEMORY_KINDS.get(side.device, "")
    return {"peak_memory_bytes": side.peak_memory(), "peak_memory_kind": kind}


def run_benchmarks(presets: list[str], *, frameworks: list[str] | None = None, steps: int = 20,
                   warmup: int = 3, generate_count: int = 48) -> dict:
    frameworks = frameworks or list(SIDES)
    info = machine_info()
    log(f"machine: {info['cpu']}, {info['physical_cores']} cores"
        + (f", {info['gpu']}" if info["gpu"] else "") + f"; load average {info['load_average']}")
    results = []
    for preset in presets:
        results.extend(bench_preset(preset, frameworks, steps, warmup, generate_count))
    info["load_average_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine_tag": machine_tag(info),
        "machine": info,
        "method": (f"median of {steps} training steps after {warmup} warm-up steps, frameworks interleaved "
                   "step by step in one process; generation: best of 3 greedy runs at batch 1 with a KV "
                   "cache, prefill excluded"),
        "results": results,
        "ratios": ratios(results),
    }


def run_memory_only(presets: list[str], frameworks: list[str], steps: int = 2) -> dict:
    """Each framework's (and, on a CPU-only machine, MLX's plain path's) training-step memory, each in a
    child process of its own, at the preset's full batch; no timing."""
    import mlx.core as mx

    info = machine_info()
    cpu = not mx.is_available(mx.gpu)
    rows = []
    for preset in presets:
        batch_size = load_preset(preset)[1].contexts_per_batch
        runs = [(name, False) for name in frameworks]
        runs += [("mlx", True)] if cpu and "mlx" in frameworks else []
        for framework, plain in runs:
            log(f"[{preset}] memory of {framework}{' (plain)' if plain else ''} in a child process")
            report = child_memory(preset, framework, plain, batch_size, steps)
            if report is not None:
                report["batch_size"] = batch_size
                report["rss_growth_kind"] = MEMORY_KINDS["rss"]
                report["allocator_peak_kind"] = MEMORY_KINDS["mlx"] if framework == "mlx" else None
                rows.append(report)
    info["load_average_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine_tag": machine_tag(info), "machine": info,
            "method": f"{steps} training steps per child process; memory only", "memory": rows}


def ratios(results: list[dict]) -> dict:
    """MLX / PyTorch per preset, for the median step and for the best step."""
    out = {}
    by_key = {}
    for r in results:  # MLX's row is its default path (the fused CPU one where there is also a plain row)
        by_key.setdefault((r["preset"], r["framework"]), r)
    for preset in dict.fromkeys(r["preset"] for r in results):
        mlx, torch = by_key.get((preset, "mlx")), by_key.get((preset, "pytorch"))
        if mlx and torch:
            out[preset] = {
                "train_median": mlx["train_tokens_per_second"] / torch["train_tokens_per_second"],
                "train_best": mlx["train_tokens_per_second_best"] / torch["train_tokens_per_second_best"],
                "generate": mlx["generate_tokens_per_second"] / torch["generate_tokens_per_second"],
            }
    return out


def dumps(document: dict) -> str:
    return json.dumps(document, indent=2)

