#!/usr/bin/env bash
# BLIP: COCO captioning fine-tune, ViT-L.
# Usage: [NGPU=8] projects/blip/run_scripts/train/train_caption_coco_large.sh [--options run.key=value ...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../../../.."  # the repository root
NGPU=${NGPU:-8}
torchrun --nproc_per_node="$NGPU" -m lavislite.train --cfg-path projects/blip/train/caption_coco_large_ft.yaml "$@"
