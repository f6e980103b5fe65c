#!/usr/bin/env bash
# One evaluation of a checkpoint: bash scripts/eval_ebm.sh CKPT [MODE (default fid)] [extra eval_maebm.py flags]
set -euo pipefail
cd "$(dirname "$0")/.."
CKPT=${1:?usage: bash scripts/eval_ebm.sh CKPT [MODE] [flags...]}
MODE=${2:-fid}
shift $(( $# >= 2 ? 2 : 1 ))
exec "${PYTHON:-python}" eval_maebm.py --load_path "$CKPT" --eval "$MODE" "$@"
