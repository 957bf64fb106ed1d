#!/usr/bin/env bash
# CapFilt step 4: pre-train a new BLIP on the human-annotated pairs + the bootstrapped web (bootstrapped.json).
# Usage: [NGPU=8] projects/capfilt/run_scripts/4_pretrain.sh [KEY=VALUE ...]  (extra overrides, appended to --options)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.bash"
NGPU=${NGPU:-8}
torchrun --nproc_per_node="$NGPU" -m lavislite.train --cfg-path projects/capfilt/pretrain_bootstrapped.yaml \
  --options run.output_dir="$OUT" "$@"
