# Shared by the CapFilt run scripts (sourced): the repository root, NGPU, where the steps write, and
# newest STEP = the newest checkpoint_best.pth (else checkpoint_latest.pth) a step wrote.
cd "$(dirname "${BASH_SOURCE[0]}")/../../.."  # the repository root
OUT=${OUT:-output/capfilt}
PRETRAINED=${PRETRAINED:-https://storage.googleapis.com/sfr-vision-language-research/BLIP/models/model_base_14M.pth}
newest() {
  local f
  f=$(ls -t "$OUT/$1"/*/checkpoint_best.pth 2>/dev/null | head -1 || true)
  [ -n "$f" ] || f=$(ls -t "$OUT/$1"/*/checkpoint_latest.pth 2>/dev/null | head -1 || true)
  [ -n "$f" ] || { echo "no checkpoint of step '$1' under $OUT/$1; run that step first" >&2; exit 1; }
  echo "$f"
}
