#!/usr/bin/env bash
# M-JEM recipe (separate energy head, --uncond) on fashionmnist (offline data) with a WRN-16-4 sized for 28x28 images and a 50-epoch schedule:
# pyx 1.0, K=5 SGLD steps, SGLD noise 0.001, l2 0.5. Meant for a GPU; extra arguments are passed last.
# The Gaussian the chains start from is fitted first when ./data/centers lacks it (the command is printed).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
launch_training train_maebm.py --dataset fashionmnist --data_root "$DATA_ROOT" --center_dir "$CENTER_DIR" \
  --lr .1 --optimizer sgd \
  --px 1.0 --pyx 1.0 \
  --sigma .0 --width 4 --depth 16 \
  --plot_uncond --warmup_iters 1000 \
  --model wrn \
  --norm batch \
  --print_every 100 \
  --n_epochs 50 --decay_epochs 20 35 45 \
  --n_steps 5 \
  --sgld_lr 1 \
  --sgld_std 0.001 \
  --l2_coeff 0.5 \
  --uncond \
  --n_valid 5000 \
  --save_dir ./experiment/majem_fashionmnist \
  "$@"
