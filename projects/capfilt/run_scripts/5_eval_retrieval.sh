#!/usr/bin/env bash
# CapFilt step 5a: fine-tune the new model on COCO retrieval and report the test split (BLIP Table 1's TR@1/IR@1).
# Usage: [NGPU=8] projects/capfilt/run_scripts/5_eval_retrieval.sh [KEY=VALUE ...]  (extra overrides, appended to --options)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.bash"
NGPU=${NGPU:-8}
torchrun --nproc_per_node="$NGPU" -m lavislite.train --cfg-path projects/blip/train/retrieval_coco_ft.yaml \
  --options run.output_dir="$OUT" run.run_name=eval_retrieval model.checkpoint="$(newest pretrain_bootstrapped)" "$@"
