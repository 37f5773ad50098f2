"""The Linux CPU speedups: MKL loaded before mlx.core, and a JIT compiler wrapper that is safe to inherit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

linux_x86 = pytest.mark.skipif(
    not (sys.platform.startswith("linux") and os.uname().machine == "x86_64"), reason="Linux x86 only"
)

PROBE = (
    "import json, mlxstory, mlxstory.cpu_speedups as c, mlx.core as mx;"
    "print(json.dumps({'blas': c.REPORT.blas_library, 'wrapper': c.REPORT.jit_wrapper,"
    " 'notes': c.REPORT.notes}))"
)


def _probe(env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@linux_x86
def test_a_child_inheriting_the_wrapper_on_path_still_reaches_the_real_compiler(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    first = _probe(env)
    if first["wrapper"] is None:
        pytest.skip("no g++ with AVX2/FMA here")
    # A child of an mlxstory process starts with the wrapper first on PATH.
    env["PATH"] = f"{Path(first['wrapper']).parent}{os.pathsep}{env['PATH']}"
    second = _probe(env)
    script = Path(second["wrapper"]).read_text()
    assert str(Path(second["wrapper"])) not in script, "the wrapper must not exec itself"
    version = subprocess.run([second["wrapper"], "--version"], env=env, capture_output=True, text=True,
                             timeout=30)
    assert version.returncode == 0 and "g++" in version.stdout.lower() + version.stderr.lower()


@linux_x86
def test_mkl_is_loaded_before_mlx_and_can_be_switched_off(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    assert "libmkl_rt" in (_probe(env)["blas"] or "")
    off = _probe({**env, "MLXSTORY_CPU_SPEEDUPS": "0"})
    assert off["blas"] is None and off["wrapper"] is None
    assert any("MLXSTORY_CPU_SPEEDUPS" in note for note in off["notes"])
