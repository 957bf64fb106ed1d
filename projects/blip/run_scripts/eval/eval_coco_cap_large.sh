#!/usr/bin/env bash
# BLIP: COCO captioning test, ViT-L.
# Usage: [NGPU=8] projects/blip/run_scripts/eval/eval_coco_cap_large.sh [--options run.key=value ...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../../../.."  # the repository root
NGPU=${NGPU:-8}
torchrun --nproc_per_node="$NGPU" -m lavislite.train --cfg-path projects/blip/eval/caption_coco_large_eval.yaml "$@"
