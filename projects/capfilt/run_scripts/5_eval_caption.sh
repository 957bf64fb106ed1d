#!/usr/bin/env bash
# CapFilt step 5b: fine-tune the new model on COCO captioning and report the test split (BLIP Table 1's B@4/CIDEr).
# Usage: [NGPU=8] projects/capfilt/run_scripts/5_eval_caption.sh [KEY=VALUE ...]  (extra overrides, appended to --options)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.bash"
NGPU=${NGPU:-8}
torchrun --nproc_per_node="$NGPU" -m lavislite.train --cfg-path projects/blip/train/caption_coco_ft.yaml \
  --options run.output_dir="$OUT" run.run_name=eval_caption model.checkpoint="$(newest pretrain_bootstrapped)" "$@"
