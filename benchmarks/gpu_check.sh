#!/usr/bin/env bash
# The GPU check of a bare GPU machine (torch, numpy, scipy, scikit-learn, pandas, pyyaml, faiss-cpu,
# mvlearn; no Ray, Optuna or MLflow), from the repository root:
#
#   bash benchmarks/gpu_check.sh [--tag LABEL]
#
# 1. `python -m benchmarks gpu` (at most about 6 minutes): the epoch benchmark in fp32 and bf16 with
#    the memory floor of a step, and the packing table (sequential trials, N processes at once with
#    and without MPS, fused populations, MER2024 dims), written to benchmarks/RESULTS.md in sections
#    tagged with the GPU's name;
# 2. the device tests, where pytest is installed: tests/test_gpu.py (every test once on the CPU and
#    once on CUDA) and tests/test_gpu_check.py.
# Exit status: 0 when both passed, else the first failure's.
set -u
cd "$(dirname "$0")/.."
python -m benchmarks gpu "$@"
check=$?
if python -c "import pytest" 2>/dev/null; then
    python -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_gpu_check.py -m "not slow"
    tests=$?
else
    echo "pytest is not installed here: tests/test_gpu.py not run (pip install pytest, or bring its wheel)"
    tests=0
fi
if [ "$check" -ne 0 ]; then exit "$check"; fi
exit "$tests"
