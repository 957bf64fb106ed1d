#!/usr/bin/env bash
# The offline demo: shapes world -> pre-training -> fine-tuning (captioning, retrieval, VQA, NLVR)
# -> evaluation -> zero-shot video retrieval and video QA, with a table of metrics next to chance.
# About 10 minutes on 2 CPU cores; no network. Add --quick for a one-to-two-minute smoke run.
#   bash projects/demo/run_demo.sh [--quick] [--out DIR] [--seed N] [--threads N]
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python -m lavislite demo "$@"
