"""`mlxstory dashboard RUN_DIR`: watch a run from another terminal, or replay a finished one."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated

import typer

from mlxstory.cli.app import app
from mlxstory.errors import MlxstoryError

RUN_MARKERS = ("metrics.jsonl", "model.ron", "run.json")


def check_run_dir(run_dir: Path) -> None:
    """A run directory is one the trainer has started writing; anything else is a one-line error."""
    hint = "pass the --out folder of `mlxstory train`"
    if not run_dir.exists():
        raise MlxstoryError(f"run directory {run_dir} does not exist; {hint}")
    if not run_dir.is_dir():
        raise MlxstoryError(f"{run_dir} is a file, not a run directory; {hint}")
    if not any((run_dir / name).exists() for name in RUN_MARKERS):
        raise MlxstoryError(f"{run_dir} is not a run directory (no {', '.join(RUN_MARKERS)}); {hint}")


@app.command("dashboard")
def dashboard_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `mlxstory train`.")],
    follow: Annotated[
        bool, typer.Option(help="Keep following metrics.jsonl while the run is still training.")
    ] = True,
    web: Annotated[
        bool, typer.Option("--web", help="Serve the dashboard to browsers instead (the `web` extra).")
    ] = False,
    host: Annotated[
        str, typer.Option(help="With --web: the address to listen on; 0.0.0.0 lets other machines in.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="With --web: the port to listen on.")] = 8000,
) -> None:
    """Show a run in the dashboard: replay its metrics.jsonl, then follow it while it grows.

    Keys: g samples a story from the run's latest checkpoint, e edits the prompt, q quits.
    With --web, every browser tab gets its own dashboard; none of them can pause or stop the run.
    """
    check_run_dir(run_dir)
    if web:
        serve_in_browser(run_dir, host=host, port=port, follow=follow)
        return
    from mlxstory.tui.app import run_dashboard

    run_dashboard(run_dir, follow=follow)


def serve_in_browser(run_dir: Path, *, host: str, port: int, follow: bool) -> None:
    if not 1 <= port <= 65535:
        raise MlxstoryError(f"--port must be between 1 and 65535, got {port}")
    if importlib.util.find_spec("textual_serve") is None:
        raise MlxstoryError('the browser dashboard needs textual-serve: pip install "mlxstory[web]"')
    from mlxstory.tui.web import serve_dashboard

    serve_dashboard(run_dir, host=host, port=port, follow=follow)
