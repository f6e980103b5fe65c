#!/usr/bin/env bash
# One evaluation of a checkpoint: bash scripts/eval_ebm.sh CKPT [MODE (default fid)] [extra eval_maebm.py flags]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
if wants_help "$@"; then
  echo "usage: bash scripts/eval_ebm.sh CKPT [MODE (default fid)] [eval_maebm.py flags]"
  exec "$PY" eval_maebm.py --help
fi
CKPT=${1:?usage: bash scripts/eval_ebm.sh CKPT [MODE] [flags...]}
MODE=${2:-fid}
shift $(( $# >= 2 ? 2 : 1 ))
echo "results: $(dirname "$CKPT")/eval_$MODE/ (unless --save_dir says otherwise)"
exec "$PY" eval_maebm.py --load_path "$CKPT" --eval "$MODE" "$@"
