#!/usr/bin/env bash
# M-EBM on CelebA 128x128 (ImageFolder layout: DATA_ROOT/celeba128/train/<any folder>/<images>),
# the CIFAR-10 M-EBM recipe at 128x128; the Gaussian is fitted at 32x32 and upsampled.
# Needs celeba128_mean_one.pt / celeba128_cov_one.pt: python one_center.py --dataset celeba128 --data_root DATA_ROOT
# Extra arguments are passed on last, so they override these.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" train_maebm.py --dataset celeba128 \
  --lr .1 --optimizer sgd \
  --px 1.0 --pyx 0.0 \
  --sigma .0 --width 10 --depth 28 \
  --plot_uncond --warmup_iters 1000 \
  --model wrn \
  --norm batch \
  --print_every 100 \
  --n_epochs 200 --decay_epochs 60 120 180 \
  --n_steps 2 \
  --sgld_lr 1 \
  --sgld_std 0.0 \
  --l2_coeff 0.1 \
  --uncond \
  --save_dir ./experiment/maebm_celeba128 \
  "$@"
