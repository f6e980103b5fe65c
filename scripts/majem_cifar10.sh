#!/usr/bin/env bash
# M-JEM on CIFAR-10, the published recipe (upstream scripts/majem_cifar10.sh): p(x) + p(y|x), K=5 SGLD steps,
# l2 0.5, SGLD noise 0.001, separate energy head (--uncond), WRN-28-10.
# The Gaussian the chains start from is fitted first when ./data/centers lacks it (the command is printed).
# CIFAR-10 is downloaded into ./data by torchvision when it is not there.
# Extra arguments are passed on last, so they override these.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
launch_training train_maebm.py --dataset cifar10 --data_root "$DATA_ROOT" --center_dir "$CENTER_DIR" \
  --lr .1 --optimizer sgd \
  --px 1.0 --pyx 1.0 \
  --sigma .0 --width 10 --depth 28 \
  --plot_uncond --warmup_iters 1000 \
  --model wrn \
  --norm batch \
  --print_every 100 \
  --n_epochs 200 --decay_epochs 60 120 180 \
  --n_steps 5 \
  --sgld_lr 1 \
  --sgld_std 0.001 \
  --l2_coeff 0.5 \
  --uncond \
  --save_dir ./experiment/majem_cifar10 \
  "$@"
