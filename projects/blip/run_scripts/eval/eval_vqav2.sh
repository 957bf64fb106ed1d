#!/usr/bin/env bash
# BLIP: VQAv2 val score + test-dev submission file.
# Usage: [NGPU=8] projects/blip/run_scripts/eval/eval_vqav2.sh [--options run.key=value ...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../../../.."  # the repository root
NGPU=${NGPU:-8}
torchrun --nproc_per_node="$NGPU" -m lavislite.train --cfg-path projects/blip/eval/vqav2_eval.yaml "$@"
