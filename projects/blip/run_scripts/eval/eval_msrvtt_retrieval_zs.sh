#!/usr/bin/env bash
# BLIP: zero-shot MSR-VTT 1k-A text-video retrieval with the COCO retrieval model.
# Usage: [NGPU=8] projects/blip/run_scripts/eval/eval_msrvtt_retrieval_zs.sh [--options run.key=value ...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../../../.."  # the repository root
NGPU=${NGPU:-8}
torchrun --nproc_per_node="$NGPU" -m lavislite.train --cfg-path projects/blip/eval/msrvtt_retrieval_zs.yaml --options run.evaluate=true "$@"
