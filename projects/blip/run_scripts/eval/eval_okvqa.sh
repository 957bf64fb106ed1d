#!/usr/bin/env bash
# BLIP: OK-VQA test.
# Usage: [NGPU=8] projects/blip/run_scripts/eval/eval_okvqa.sh [--options run.key=value ...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../../../.."  # the repository root
NGPU=${NGPU:-8}
torchrun --nproc_per_node="$NGPU" -m lavislite.train --cfg-path projects/blip/eval/okvqa_eval.yaml "$@"
