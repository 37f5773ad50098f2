#!/usr/bin/env bash
# Here (with network): fetch the mlx wheels for the NVIDIA machine and split the big one in two
# carryable halves, .whl1/ and .whl2/ (git-ignored). See gpu_check.sh for the two calls.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qxF '/.whl1/' .git/info/exclude || printf '/.whl1/\n/.whl2/\n' >> .git/info/exclude
tmp=$(mktemp -d)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_35_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    -d "$tmp" mlx==0.32.4 mlx-cuda-13==0.32.4
mkdir -p .whl1 .whl2
cp "$tmp"/mlx-0.32.4-*.whl .whl2/
(cd "$tmp" && split -b 46M mlx_cuda_13-*.whl whlpart.)
mv "$tmp"/whlpart.aa .whl1/ && mv "$tmp"/whlpart.ab .whl2/
rm -rf "$tmp"
du -sh .whl1 .whl2
