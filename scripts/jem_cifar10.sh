#!/usr/bin/env bash
# JEM on CIFAR-10 (Grathwohl et al. 2020), its published command (github.com/wgrathwohl/JEM readme:
# train_wrn_ebm.py --lr .0001 --dataset cifar10 --optimizer adam --p_x_weight 1.0 --p_y_given_x_weight 1.0
# --p_x_y_weight 0.0 --sigma .03 --width 10 --depth 28 --plot_uncond --warmup_iters 1000) with its script's defaults
# written out: its sample_q (--sampler jem: model in eval mode, unclamped gradient, x never clamped), uniform starts,
# K=20 steps of size 1 with noise 0.01, buffer 10,000 with 5% restarts, batches of 64 for p(x) and p(y|x), no
# normalisation layers, no weight decay, lr x0.3 at epochs 160 and 180, logsumexp energy (no --uncond), no l2 term.
# One difference stays: JEM also crops and flips its p(x) batch; here only the labelled batch is augmented.
# CIFAR-10 is downloaded into ./data by torchvision when it is not there. Extra arguments are passed on last.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
launch_training train_maebm.py --dataset cifar10 --data_root "$DATA_ROOT" --center_dir "$CENTER_DIR" \
  --lr .0001 --optimizer adam --weight_decay 0 \
  --px 1.0 --pyx 1.0 \
  --sigma .03 --width 10 --depth 28 --model wrn --norm none \
  --plot_uncond --warmup_iters 1000 --print_every 100 \
  --n_epochs 200 --decay_epochs 160 180 --decay_rate 0.3 \
  --batch_size 64 --pyx_batch_size 64 \
  --init u --sampler jem --n_steps 20 --sgld_lr 1 --sgld_std 0.01 \
  --buffer_size 10000 --reinit_freq 0.05 --l2_coeff 0 --n_valid 5000 \
  --save_dir ./experiment/jem_cifar10 \
  "$@"
