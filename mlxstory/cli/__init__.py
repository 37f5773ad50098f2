"""The `mlxstory` command: thin Typer commands over the library.

Each command lives in its own module and registers itself on `app`; bodies turn options into
arguments and call library functions. `MlxstoryError`s become one `error: ...` line and exit 1.
"""

from __future__ import annotations

import sys

from mlxstory.cli.app import app, run_app

# Importing a command module registers its command on `app`.
from mlxstory.cli import info_command  # noqa: E402,F401  isort: skip
from mlxstory.cli import tokenize_command  # noqa: E402,F401  isort: skip
from mlxstory.cli import train_command  # noqa: E402,F401  isort: skip
from mlxstory.cli import dashboard_command  # noqa: E402,F401  isort: skip
from mlxstory.cli import report_command  # noqa: E402,F401  isort: skip
from mlxstory.cli import generate_command  # noqa: E402,F401  isort: skip
from mlxstory.cli import eval_command  # noqa: E402,F401  isort: skip
from mlxstory.cli import bench_command  # noqa: E402,F401  isort: skip
from mlxstory.cli import export_command  # noqa: E402,F401  isort: skip
from mlxstory.cli import import_command  # noqa: E402,F401  isort: skip

__all__ = ["app", "main"]


def main() -> None:
    run_app(sys.argv[1:])
