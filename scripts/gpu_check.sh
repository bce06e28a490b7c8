#!/usr/bin/env bash
# `make gpu-check`: the GPU check of scripts/gpu_check.py (steps, budget, outputs: see its docstring), run by the
# machine's own Python, the one that has torch with CUDA; GPU_PYTHON names another. Options pass through
# (e.g. --budget-s 480, --work DIR for the step logs).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${GPU_PYTHON:-python3}" scripts/gpu_check.py check "$@"
