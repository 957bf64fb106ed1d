#!/usr/bin/env bash
# BLIP: zero-shot MSVD-QA with the VQAv2 model.
# Usage: [NGPU=8] projects/blip/run_scripts/eval/eval_msvd_qa_zs.sh [--options run.key=value ...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../../../.."  # the repository root
NGPU=${NGPU:-8}
torchrun --nproc_per_node="$NGPU" -m lavislite.train --cfg-path projects/blip/eval/msvd_qa_zs.yaml --options run.evaluate=true "$@"
