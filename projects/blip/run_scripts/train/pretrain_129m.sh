#!/usr/bin/env bash
# BLIP: pre-training on 129M images (14M + LAION-115M).
# Usage: [NGPU=8] projects/blip/run_scripts/train/pretrain_129m.sh [--options run.key=value ...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../../../.."  # the repository root
NGPU=${NGPU:-8}
torchrun --nproc_per_node="$NGPU" -m lavislite.train --cfg-path projects/blip/train/pretrain_129m.yaml "$@"
