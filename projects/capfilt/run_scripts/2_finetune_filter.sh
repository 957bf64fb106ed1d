#!/usr/bin/env bash
# CapFilt step 2: the filter = the image-grounded encoder of the same pre-trained BLIP, ITC+ITM fine-tune on COCO,
# as a separate model (sharing parameters with the captioner hurts: confirmation bias, BLIP Table 4).
# Usage: [NGPU=8] [PRETRAINED=model_base_14M.pth] projects/capfilt/run_scripts/2_finetune_filter.sh [KEY=VALUE ...]  (extra overrides, appended to --options)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.bash"
NGPU=${NGPU:-8}
torchrun --nproc_per_node="$NGPU" -m lavislite.train --cfg-path projects/blip/train/retrieval_coco_ft.yaml \
  --options run.output_dir="$OUT" run.run_name=filter model.checkpoint="$PRETRAINED" "$@"
