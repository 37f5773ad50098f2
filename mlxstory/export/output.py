"""An output folder that appears whole or not at all: written under a temporary sibling, renamed last."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlxstory.errors import MlxstoryError


class ExportError(MlxstoryError):
    """Weights, configs or an output folder that cannot be converted or written."""


def check_output_dir(out: Path, flag: str = "OUT") -> None:
    """Refuse an existing, non-empty OUT before any work: nothing is ever overwritten."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{flag} {out} already exists and is not empty; choose a new or empty folder")


@contextmanager
def output_dir(out: str | Path, flag: str = "OUT") -> Iterator[Path]:
    """Yield a temporary folder beside `out`; on success it becomes `out`, on any error it is removed."""
    out = Path(out)
    check_output_dir(out, flag)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary folder
        yield temporary
        check_output_dir(out, flag)  # someone may have filled it meanwhile
        if out.exists():
            out.rmdir()
        os.replace(temporary, out)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
