#!/usr/bin/env bash
# CapFilt step 1: the captioner = the image-grounded decoder of a pre-trained BLIP, LM fine-tune on COCO.
# Usage: [NGPU=8] [PRETRAINED=model_base_14M.pth] projects/capfilt/run_scripts/1_finetune_captioner.sh [KEY=VALUE ...]  (extra overrides, appended to --options)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.bash"
NGPU=${NGPU:-8}
torchrun --nproc_per_node="$NGPU" -m lavislite.train --cfg-path projects/blip/train/caption_coco_ft.yaml \
  --options run.output_dir="$OUT" run.run_name=captioner model.checkpoint="$PRETRAINED" "$@"
