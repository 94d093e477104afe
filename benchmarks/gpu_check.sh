#!/usr/bin/env bash
# The GPU checks in one command (at most about 8 minutes on one GPU): the CUDA tests, training and
# log-likelihood throughput on CUDA, one Figure 2 panel for 10^7 samples; one JSON of results.
#   bash benchmarks/gpu_check.sh [OUT.json]      (MNIST from $AEVB_DATA_DIR, else ../shared/data)
# Without a CUDA device: one line, exit status 2.
set -euo pipefail
cd "$(dirname "$0")/.."
exec timeout 480 python benchmarks/gpu_check.py --out "${1:-gpu_check.json}"
