"""`mlxstory report RUN --to tensorboard|wandb`: log a run's metrics.jsonl to a tracker afterwards."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlxstory.cli.app import app
from mlxstory.cli.dashboard_command import check_run_dir
from mlxstory.errors import MlxstoryError


@app.command("report")
def report_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `mlxstory train`.")],
    to: Annotated[
        str, typer.Option("--to", metavar="tensorboard,wandb", help="Where to log it; comma-separated."),
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="DIR", show_default="RUN/tensorboard",
                     help="TensorBoard log folder (must hold no event files yet)."),
    ] = None,
) -> None:
    """Convert a run's metrics.jsonl into TensorBoard event files, or a W&B run (offline unless WANDB_MODE
    is set; upload it with `wandb sync`): the same curves `--report-to` logs during training."""
    from mlxstory.training.metrics_log import METRICS_FILE, current_history, read_metrics
    from mlxstory.training.trackers import (
        TENSORBOARD_DIR,
        Trackers,
        make_tracker,
        parse_tracker_names,
    )

    check_run_dir(run_dir)
    names = parse_tracker_names(to, flag="--to")
    metrics = run_dir / METRICS_FILE
    if not metrics.is_file():
        raise MlxstoryError(f"{run_dir} has no {METRICS_FILE} yet: nothing to report; train it first")
    log_dir = out or run_dir / TENSORBOARD_DIR
    if "tensorboard" in names and any(log_dir.glob("events.out.tfevents.*")):
        raise MlxstoryError(f"{log_dir} already holds TensorBoard event files (from --report-to or an "
                            "earlier report); pass --out NEW_DIR, or delete them to write them again")
    history = read_metrics(metrics)
    for warning in history.warnings:
        typer.echo(f"warning: {warning}", err=True)
    events = current_history(history.events)
    trackers = Trackers([make_tracker(name, run_dir, log_dir=log_dir, purge_resumed=False) for name in names])
    failures: list[str] = []
    for event in events:
        failures += trackers.handle(event)
    notes, closing = trackers.close()
    for note in notes:
        typer.echo(note, err=True)
    if failures or closing:
        raise MlxstoryError("; ".join(failures + closing))
    steps = sum(1 for event in events if event.kind == "step")
    typer.echo(f"reported {steps} steps of {run_dir} to {', '.join(names)}", err=True)
