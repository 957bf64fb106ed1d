#!/usr/bin/env bash
# CapFilt step 3: caption the web images (nucleus sampling) and filter web + synthetic texts with the ITM head,
# shards split across the GPUs; rerun the same command after a crash: finished shards are skipped.
# Usage: [NGPU=8] projects/capfilt/run_scripts/3_bootstrap.sh [KEY=VALUE ...]  (e.g. output.dir=... input.shards=[...])
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.bash"
NGPU=${NGPU:-8}
torchrun --nproc_per_node="$NGPU" -m lavislite capfilt --cfg-path projects/capfilt/bootstrap.yaml \
  --options captioner.checkpoint="$(newest captioner)" filter.checkpoint="$(newest filter)" "$@"
