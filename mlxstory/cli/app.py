"""The Typer app object and the error boundary every command shares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import click
import typer
from typer.core import TyperGroup

from mlxstory import __version__
from mlxstory.errors import MlxstoryError


class _ErrorBoundary(TyperGroup):
    """Turns a library `MlxstoryError` into one `error: ...` line and exit code 1, for every command."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MlxstoryError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_ErrorBoundary,
    rich_markup_mode="rich",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Train small story-writing transformers and their BPE tokenizers with MLX.",
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mlxstory {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """mlxstory: tokenize, train, generate, evaluate, watch and benchmark."""


def fail(message: str) -> typer.Exit:
    """Print one error line on stderr; `raise fail(...) from None` in a command."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=1)


def run_app(argv: Sequence[str]) -> None:
    app(args=list(argv), prog_name="mlxstory")
