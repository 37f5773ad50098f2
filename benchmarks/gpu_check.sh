#!/usr/bin/env bash
# One-shot benchmark on an NVIDIA machine (mlx[cuda13] + PyTorch CUDA), for the device tool.
#
# The machine has python3.12 with torch (CUDA 13), numpy, safetensors and matplotlib, and no network;
# mlx and mlx-cuda-13 travel as wheels. mlx-cuda-13 (~90 MB) is over one call's 64 MiB, so it travels
# split in two (prepared here with benchmarks/gpu_prepare.sh):
#   call 1: carry [".whl1"], command: mkdir -p /root/stash && cp .whl1/* /root/stash/
#   call 2 (at once, while the machine is warm): carry [".whl2"], command: bash benchmarks/gpu_check.sh
# Results land in $OUT/<machine tag>/ (results.json, results.md, chart.png) plus $OUT/bench.log.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/bench-out}
mkdir -p "$OUT"
part_a=$(ls /root/stash/whlpart.aa .whl1/whlpart.aa 2>/dev/null | head -1)
if [ -z "$part_a" ] || [ ! -f .whl2/whlpart.ab ]; then
    echo "missing wheel parts: run call 1 (stash .whl1) right before this one" | tee "$OUT/bench.log"
    exit 2
fi
wheel=/tmp/mlx_cuda_13-0.32.4-py3-none-manylinux_2_35_x86_64.whl
cat "$part_a" .whl2/whlpart.ab > "$wheel"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl2/mlx-0.32.4-*.whl "$wheel" \
    || { echo "pip install failed" | tee "$OUT/bench.log"; exit 3; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import mlxstory, mlx.core as mx, torch; print('mlx', mx.__version__, mx.default_device(),
'| torch', torch.__version__, torch.cuda.get_device_name())"
} 2>&1 | tee "$OUT/env.txt"
timeout 330 python3 -m benchmarks --presets seed,tiny,mac --steps 20 --out "$OUT" \
    > "$OUT/results-table.md" 2> "$OUT/bench.log"
status=$?
tail -5 "$OUT/bench.log"
cat "$OUT/results-table.md"
exit $status
