#!/usr/bin/env bash
# BLIP: VQAv2 (+VG) fine-tune.
# Usage: [NGPU=8] projects/blip/run_scripts/train/train_vqav2.sh [--options run.key=value ...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../../../.."  # the repository root
NGPU=${NGPU:-8}
torchrun --nproc_per_node="$NGPU" -m lavislite.train --cfg-path projects/blip/train/vqav2_ft.yaml "$@"
