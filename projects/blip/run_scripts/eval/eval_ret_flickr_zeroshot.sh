#!/usr/bin/env bash
# BLIP: zero-shot Flickr30k retrieval with the COCO model.
# Usage: [NGPU=8] projects/blip/run_scripts/eval/eval_ret_flickr_zeroshot.sh [--options run.key=value ...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../../../.."  # the repository root
NGPU=${NGPU:-8}
torchrun --nproc_per_node="$NGPU" -m lavislite.train --cfg-path projects/blip/eval/ret_flickr_zeroshot_eval.yaml "$@"
