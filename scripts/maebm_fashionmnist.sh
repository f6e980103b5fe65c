#!/usr/bin/env bash
# maebm recipe on fashionmnist (offline data) with a WRN-16-4 sized for 28x28 images and a 50-epoch schedule:
# pyx 0.0, K=2 SGLD steps, SGLD noise 0.0, l2 0.1. Meant for a GPU; extra arguments are passed last.
# The Gaussian the chains start from is fitted first when ./data/centers lacks it (the command is printed).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
launch_training train_maebm.py --dataset fashionmnist --data_root "$DATA_ROOT" --center_dir "$CENTER_DIR" \
  --lr .1 --optimizer sgd \
  --px 1.0 --pyx 0.0 \
  --sigma .0 --width 4 --depth 16 \
  --plot_uncond --warmup_iters 1000 \
  --model wrn \
  --norm batch \
  --print_every 100 \
  --n_epochs 50 --decay_epochs 20 35 45 \
  --n_steps 2 \
  --sgld_lr 1 \
  --sgld_std 0.0 \
  --l2_coeff 0.1 \
  --uncond \
  --save_dir ./experiment/maebm_fashionmnist \
  "$@"
