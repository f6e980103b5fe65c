#!/usr/bin/env bash
# M-EBM on CelebA 128x128, the published recipe (upstream scripts/maebm_celeba.sh, run by its
# train_maebm_celeba.py): p(x) only, K=10, no l2, lr 0.02, WRN-28-2 with the fourth stage for 128 pixels,
# logsumexp energy of a 10-way head, decay at epochs 80/120/160.
# Images in DATA_ROOT/train/<any folder>/<images> (upstream's layout; no test split is needed).
# The Gaussian the chains start from is fitted first when ./data/centers lacks it (the command is printed).
# It is fitted at 32x32 and upsampled 4x4 per pixel, as upstream. Extra arguments are passed last and override these.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
launch_training train_maebm_celeba.py --dataset celeba128 --data_root "$DATA_ROOT" --center_dir "$CENTER_DIR" \
  --lr .02 --optimizer sgd \
  --px 1.0 \
  --width 2 --depth 28 \
  --warmup_iters 1000 \
  --model wrn --norm batch \
  --print_every 100 --n_epochs 200 --decay_epochs 80 120 160 \
  --n_steps 10 --sgld_lr 1 --sigma .0 \
  --l2_coeff 0. --batch_size 64 \
  --save_dir ./experiment/maebm_celeba128 \
  "$@"
