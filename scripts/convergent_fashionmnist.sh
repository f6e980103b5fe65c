#!/usr/bin/env bash
# Convergent learning on Fashion-MNIST (the counterpart of scripts/shortrun_fashionmnist.sh, the non-convergent
# short-run learner): a persistent bank of chains started from uniform noise and never re-initialised, 100
# Langevin steps x + grad f + eps N with noise (small eps = 0.005, the tempered step of image EBMs) per
# iteration, so that the bank tracks the model's own steady state. Long-run chains (10,000 steps from noise,
# every 1,000 iterations) show whether that steady state looks like data: in convergent learning it should,
# in short-run learning it need not. 5-conv LeakyReLU net, p(x) only.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
launch_training train_maebm.py --dataset fashionmnist --data_root "$DATA_ROOT" --center_dir "$CENTER_DIR" \
  --model conv5 --width 1 --norm none --uncond \
  --px 1.0 --pyx 0.0 \
  --init u --reinit_freq 0 --buffer_size 10000 \
  --sampler langevin --n_steps 100 --sgld_lr 1 --sgld_std 0.005 \
  --l2_coeff 0 \
  --optimizer adam --lr 1e-4 --weight_decay 0 --warmup_iters 0 \
  --batch_size 64 --n_epochs 20 --decay_epochs 15 \
  --long_run_every 1000 --long_run_steps 10000 --long_run_n 64 \
  --plot_every 100 --print_every 100 --plot_uncond \
  --save_dir ./experiment/convergent_fashionmnist \
  "$@"
