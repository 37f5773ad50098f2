"""The Linux CPU speedups: MKL loaded before mlx.core, and a JIT compiler wrapper that is safe to inherit."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

linux_x86 = pytest.mark.skipif(
    not (sys.platform.startswith("linux") and os.uname().machine == "x86_64"), reason="Linux x86 only"
)

# One 64x64 matmul, then the report; MKL_VERBOSE=1 makes MKL print a line per BLAS call it serves.
PROBE = (
    "import json, mlxstory, mlxstory.cpu_speedups as c, mlx.core as mx;"
    "a = mx.ones((64, 64)); mx.eval(a @ a);"
    "print(json.dumps({'blas': c.REPORT.blas_library, 'wrapper': c.REPORT.jit_wrapper,"
    " 'jit_cache': c.REPORT.jit_cache, 'notes': c.REPORT.notes}))"
)
MKL_SGEMM = re.compile(r"^MKL_VERBOSE SGEMM\(N,N,64,64,64,", re.MULTILINE | re.IGNORECASE)


def _probe(env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], env={**env, "MKL_VERBOSE": "1"}, capture_output=True,
                         text=True, check=True)
    report = json.loads(out.stdout.splitlines()[-1])
    report["mkl_sgemm_calls"] = len(MKL_SGEMM.findall(out.stdout))
    return report


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
    on = _probe(env)
    assert "libmkl_rt" in (on["blas"] or "")
    # Loaded is not enough: MLX's own matmul must land in MKL's sgemm (a wheel that stopped resolving
    # cblas_sgemm globally would train ~60x slower with the same library name reported).
    assert on["mkl_sgemm_calls"] >= 1
    off = _probe({**env, "MLXSTORY_CPU_SPEEDUPS": "0"})
    assert off["blas"] is None and off["wrapper"] is None and off["mkl_sgemm_calls"] == 0
    assert any("MLXSTORY_CPU_SPEEDUPS" in note for note in off["notes"])


# A fused elementwise kernel with an exp: the JIT compiles it with g++ on the first call.
COMPILE = (
    "import mlxstory, mlxstory.cpu_speedups as c, mlx.core as mx;"
    "f = mx.compile(lambda x: mx.exp(x) * x + 1.0); mx.eval(f(mx.arange(1000, dtype=mx.float32)));"
    "print(c.REPORT.jit_cache)"
)


@linux_x86
def test_jit_kernels_are_compiled_through_the_wrapper_with_its_flags(tmp_path: Path) -> None:
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("no objdump here")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", COMPILE], env=env, check=True, capture_output=True, text=True)
    cache = out.stdout.split()[-1]
    if cache == "None":
        pytest.skip("no g++ with AVX2/FMA here")
    # MLX built the kernel under the private cache (the wrapper's TMPDIR), not the shared /tmp/mlx.
    kernels = list(Path(cache).rglob("*.so"))
    assert len(kernels) == 1, kernels
    code = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(kernels[0])], capture_output=True,
                          text=True, check=True).stdout
    # Plain g++ targets baseline x86-64: SSE registers only, exp and fma called per element. The wrapper's
    # -march=native gives AVX registers and FMA instructions; its inlining flags inline MLX's exp.
    assert re.search(r"%[yz]mm\d", code), "no AVX in the kernel: the flags never reached g++"
    calls = [line for line in code.splitlines() if re.search(r"\bcall\b.*<.*(exp|fma).*@plt>", line)]
    assert calls == [], calls
