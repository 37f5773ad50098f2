"""`mlxstory bench`: MLX against its PyTorch twin on this machine (training and generation)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlxstory.cli.app import app
from mlxstory.errors import MlxstoryError


@app.command("bench")
def bench_command(
    presets: Annotated[str, typer.Option(help="Comma-separated presets to run.")] = "seed,tiny",
    steps: Annotated[int, typer.Option(help="Timed training steps per framework (median reported).")] = 20,
    warmup: Annotated[int, typer.Option(help="Untimed steps first (compilation, allocator).")] = 3,
    frameworks: Annotated[str, typer.Option(help="Comma-separated: mlx,pytorch.")] = "mlx,pytorch",
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON document on stdout only.")] = False,
    out: Annotated[Path, typer.Option(help="Results folder; files go to OUT/<machine tag>/.")] = Path(
        "benchmarks/results"),
    save: Annotated[bool, typer.Option(help="Write results.json, results.md and chart.png.")] = True,
) -> None:
    """Training step (forward+backward+AdamW) and KV-cached generation tokens/s, MLX beside PyTorch,
    each on its best device, interleaved in one run. Progress on stderr. Needs the `bench` extra."""
    from mlxstory.formats.config import PRESETS

    chosen = [p.strip() for p in presets.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in PRESETS]
    if unknown or not chosen:
        raise MlxstoryError(f"--presets: unknown preset(s) {', '.join(unknown) or '(none)'}; "
                            f"choose from {', '.join(PRESETS)}")
    names = [f.strip() for f in frameworks.split(",") if f.strip()]
    if not names or any(f not in ("mlx", "pytorch") for f in names):
        raise MlxstoryError(f"--frameworks: got {frameworks!r}; use mlx, pytorch or mlx,pytorch")
    if steps < 1 or warmup < 0:
        raise MlxstoryError("--steps must be at least 1 and --warmup at least 0")
    if "pytorch" in names:
        try:
            import torch  # noqa: F401
        except ImportError:
            raise MlxstoryError("PyTorch is not installed: pip install 'mlxstory[bench]' "
                                "(or pass --frameworks mlx)") from None

    from mlxstory.benchmarks.__main__ import main

    argv = ["--presets", ",".join(chosen), "--frameworks", ",".join(names), "--steps", str(steps),
            "--warmup", str(warmup), "--out", str(out)]
    main(argv + (["--json"] if as_json else []) + ([] if save else ["--no-save"]))
