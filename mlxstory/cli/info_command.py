"""`mlxstory info`: what MLX runs on here, and how fast its matrix multiply is."""

from __future__ import annotations

import json
import platform
import time
from typing import Annotated

import typer

from mlxstory.cli.app import app


def measure_sgemm_gflops(size: int = 1024, repeats: int = 5) -> float:
    """Median GFLOP/s of an fp32 size x size matmul on MLX's default device."""
    import mlx.core as mx

    a = mx.random.normal((size, size))
    b = mx.random.normal((size, size))
    mx.eval(a @ b)  # warm-up: first call builds kernels
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        mx.eval(a @ b)
        times.append(time.perf_counter() - start)
    times.sort()
    return 2 * size**3 / times[len(times) // 2] / 1e9


def collect_info(measure: bool = True) -> dict:
    import mlx.core as mx
    import numpy as np

    from mlxstory import __version__, cpu_speedups

    report = cpu_speedups.REPORT
    info = {
        "mlxstory": __version__,
        "mlx": mx.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "default_device": str(mx.default_device()),
        "metal_available": bool(mx.metal.is_available()),
        "cuda_available": bool(getattr(mx, "cuda", None) and mx.cuda.is_available()),
        "blas": report.blas_library
        or ("Accelerate" if platform.system() == "Darwin" else "bundled (reference)"),
        "jit_flag_wrapper": report.jit_wrapper,
        "jit_cache": report.jit_cache,
        "notes": report.notes,
    }
    if measure:
        info["sgemm_gflops"] = round(measure_sgemm_gflops(), 1)
    return info


@app.command("info")
def info_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    measure: Annotated[bool, typer.Option(help="Measure sgemm GFLOP/s (takes about a second).")] = True,
) -> None:
    """Versions, MLX's default device, the BLAS MLX uses on Linux, and a measured sgemm GFLOP/s."""
    info = collect_info(measure=measure)
    if as_json:
        typer.echo(json.dumps(info))
        return
    for key, value in info.items():
        if key == "notes":
            for note in value:
                typer.echo(f"note: {note}")
        elif value is not None:
            typer.echo(f"{key:>18}: {value}")
