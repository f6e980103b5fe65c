#!/usr/bin/env bash
# A sweep on Fashion-MNIST over sampler steps (5, 10), sampler step size (1), learning rate (0.05, 0.1) and
# spectral norm (off, on): 8 short M-JEM runs with the quickstart's settings, FID/KID of each final replay
# buffer, one table (sweep.csv) and one figure (sweep.png). Grid flags given again override these; other
# flags go to every run (e.g. --n_epochs 1 --device cuda).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
launch_training sweep.py \
  --n_steps 5 10 --sgld_lr 1 --lr 0.05 0.1 --spectral_norm off on --fid --fid_ref_n 10000 \
  --save_dir ./experiment/sweep_fashionmnist \
  --dataset fashionmnist --data_root "$DATA_ROOT" --center_dir "$CENTER_DIR" \
  --model cnn --width 1 --norm batch \
  --px 1.0 --pyx 1.0 --sgld_std 0.001 --l2_coeff 0.5 \
  --warmup_iters 200 --n_epochs 2 --decay_epochs 5 6 \
  --novis \
  "$@"
