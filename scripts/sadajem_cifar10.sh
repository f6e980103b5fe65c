#!/usr/bin/env bash
# SADA-JEM on CIFAR-10, the published recipe (github.com/sndnyang/SADAJEM scripts/sadajem_cifar10.sh with its
# train_sadajem.py defaults): JEM's logsumexp energy (no separate energy head), p(x) + p(y|x), sharpness-aware minimisation
# around SGD (rho 2, adaptive by its rule rho >= 0.5, weight decay 5e-4), K=5 SGLD steps without noise, no l2 term,
# chains from one Gaussian per class (its multi_center.py), un-augmented p(x) batches, WRN-28-10.
# The per-class Gaussians the chains start from are fitted first when ./data/centers lacks them (the command is printed).
# Extra arguments are passed on last, so they override these.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
launch_training train_maebm.py --dataset cifar10 --data_root "$DATA_ROOT" --center_dir "$CENTER_DIR" \
  --lr .1 --optimizer sam --rho 2 --sam_adaptive auto --weight_decay 5e-4 \
  --px 1.0 --pyx 1.0 \
  --sigma .0 --width 10 --depth 28 \
  --plot_uncond --warmup_iters 1000 \
  --model wrn \
  --norm batch \
  --print_every 100 \
  --n_epochs 200 --decay_epochs 60 120 180 \
  --n_steps 5 \
  --sgld_lr 1 \
  --sgld_std 0.0 \
  --l2_coeff 0 \
  --init gm_class \
  --save_dir ./experiment/sadajem_cifar10 \
  "$@"
