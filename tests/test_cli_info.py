"""`mlxstory info`, `--version` and `python -m mlxstory`: what a user checks first on a new machine."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from typer.testing import CliRunner

from mlxstory import __version__
from mlxstory.cli import app


def test_info_json_names_the_device_and_blas_and_measures_sgemm() -> None:
    # MKL_VERBOSE=1: MKL prints a line per BLAS call it serves (on stdout, before the JSON).
    out = subprocess.run([sys.executable, "-m", "mlxstory", "info", "--json"], capture_output=True, text=True,
                         check=True, env={**os.environ, "MKL_VERBOSE": "1"})
    *mkl_lines, last = out.stdout.splitlines()
    info = json.loads(last)
    assert info["mlxstory"] == __version__ and info["default_device"].startswith("Device(")
    assert info["sgemm_gflops"] > 0
    if sys.platform.startswith("linux"):
        # The optimized BLAS must be active: named, and serving the very matmul whose speed is reported
        # (the reference BLAS is ~60x slower; a library loaded but bypassed would still be named).
        assert "mkl" in info["blas"]
        assert any(re.match(r"MKL_VERBOSE SGEMM\(N,N,1024,1024,1024,", line, re.IGNORECASE)
                   for line in mkl_lines), mkl_lines


def test_info_text_lists_one_fact_per_line_without_measuring() -> None:
    result = CliRunner().invoke(app, ["info", "--no-measure"])
    assert result.exit_code == 0
    assert "default_device:" in result.stdout and "sgemm_gflops" not in result.stdout


def test_version_and_module_entry_point() -> None:
    out = subprocess.run([sys.executable, "-m", "mlxstory", "--version"], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == f"mlxstory {__version__}"
