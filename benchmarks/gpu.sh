#!/usr/bin/env bash
# The GPU check, for a session that is lent a GPU (about 15 minutes of device time in all): the
# CUDA tests, then the GPU benchmark rows, in one prepared run of under 8 minutes. Writes its
# logs and CSVs under ${OUT:-results/gpu} and exits non-zero if a test failed.
#   bash benchmarks/gpu.sh
# On a machine that cannot reach PyPI, name a Python that already has the dependencies (with
# src/ and the repository root on PYTHONPATH) and no virtual environment is made:
#   PYTHON=python3 PYTHONPATH=src:. bash benchmarks/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-results/gpu}"
mkdir -p "$out"
python="${PYTHON:-.venv/bin/python}"
if [ -z "${PYTHON:-}" ]; then
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]' \
        >"$out/setup.log" 2>&1 || { echo "setup failed: see $out/setup.log"; exit 1; }
fi
nvidia-smi >"$out/nvidia-smi.txt" 2>&1
timeout 300 "$python" -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py \
    >"$out/tests.log" 2>&1
tests=$?
tail -n 3 "$out/tests.log"
timeout 240 "$python" -m benchmarks.run gpu --no-doc >"$out/bench.log" 2>&1
echo "benchmarks exit $?"
cp results/benchmarks/gpu.csv "$out/" 2>/dev/null
tail -n 15 "$out/bench.log"
exit "$tests"
