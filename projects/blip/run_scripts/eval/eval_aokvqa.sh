#!/usr/bin/env bash
# BLIP: A-OKVQA val.
# Usage: [NGPU=8] projects/blip/run_scripts/eval/eval_aokvqa.sh [--options run.key=value ...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../../../.."  # the repository root
NGPU=${NGPU:-8}
torchrun --nproc_per_node="$NGPU" -m lavislite.train --cfg-path projects/blip/eval/aokvqa_eval.yaml "$@"
