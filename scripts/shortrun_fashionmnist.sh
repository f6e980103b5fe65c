#!/usr/bin/env bash
# Short-run non-persistent learning on Fashion-MNIST: no replay buffer, every iteration starts fresh
# chains from uniform noise and runs 100 Langevin steps without noise (5-conv LeakyReLU net, p(x) only).
# This is the non-convergent learner of scripts/convergent_fashionmnist.sh: compare their long-run chains.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
launch_training train_maebm.py --dataset fashionmnist --data_root "$DATA_ROOT" --center_dir "$CENTER_DIR" \
  --model conv5 --width 1 --norm none --uncond \
  --px 1.0 --pyx 0.0 \
  --short_run --init u --sampler langevin --n_steps 100 --sgld_lr 1 --sgld_std 0 \
  --l2_coeff 0 \
  --optimizer adam --lr 1e-4 --weight_decay 0 --warmup_iters 0 \
  --batch_size 64 --n_epochs 20 --decay_epochs 15 \
  --long_run_every 1000 --long_run_steps 10000 --long_run_n 64 \
  --plot_every 100 --print_every 100 \
  --save_dir ./experiment/shortrun_fashionmnist \
  "$@"
