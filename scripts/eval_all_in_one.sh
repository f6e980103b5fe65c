#!/usr/bin/env bash
# Every evaluation of a checkpoint, one after another: bash scripts/eval_all_in_one.sh CKPT [extra flags]
# Extra flags go to every mode (e.g. --n_points 500). Modes that need a classifier are skipped for --pyx 0 runs.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
if wants_help "$@"; then
  echo "usage: bash scripts/eval_all_in_one.sh CKPT [eval_maebm.py flags, given to every mode]"
  exec "$PY" eval_maebm.py --help
fi
CKPT=${1:?usage: bash scripts/eval_all_in_one.sh CKPT [flags...]}
shift
PYX=$("$PY" -c 'import sys, torch, json; print(json.loads(torch.load(sys.argv[1], weights_only=True)["args_json"])["pyx"])' "$CKPT")
MODES="OOD logp_hist tsne uncond_samples fid gen"
if [ "$PYX" != "0.0" ]; then MODES="test_clf cali cond_samples quality $MODES"; fi
echo "results: $(dirname "$CKPT")/eval_<mode>/ (unless --save_dir says otherwise)"
for mode in $MODES; do
  echo "== $mode"
  "$PY" eval_maebm.py --load_path "$CKPT" --eval "$mode" "$@"
done
