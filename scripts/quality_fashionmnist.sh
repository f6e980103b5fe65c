#!/usr/bin/env bash
# The "quality" recipe: M-JEM on Fashion-MNIST for users with up to an hour of CPU (or a few GPU minutes). The
# quickstart's net and chains (small CNN, one Gaussian per class, K=5 SGLD steps of size 1 with noise 0.001, l2 0.5,
# SGD lr 0.05, constant) trained longer, 16 epochs, with bf16 autocast for the loss and the chains with channels_last
# (energies and loss terms stay fp32; about 1.5x the iterations per second of fp32 on this CNN) and the quickstart's
# weight average (0.999), which the classifier's evaluation uses; new chains sample the online weights, as training's
# did. No lr decays: after them the persistent chains drift onto a few classes (docs/recipes.md, "Ten epochs").
# LeakyReLU as published: SiLU collapsed the quickstart's buffer at full length (docs/recipes.md).
# --max_minutes 60 caps the run on slow machines.
# The per-class Gaussians the chains start from are fitted first when ./data/centers lacks them (the command is printed).
# Extra arguments are passed last, so they override these.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
launch_training train_maebm.py --dataset fashionmnist --data_root "$DATA_ROOT" --center_dir "$CENTER_DIR" \
  --model cnn --width 1 --norm batch \
  --px 1.0 --pyx 1.0 --init gm_class --n_steps 5 --sgld_lr 1 --sgld_std 0.001 --l2_coeff 0.5 \
  --optimizer sgd --lr 0.05 --warmup_iters 200 --n_epochs 16 --decay_rate 1 --ema 0.999 \
  --amp on --amp_sampler on --channels_last on \
  --max_minutes 60 --n_valid 5000 \
  --plot_uncond --plot_every 1000 --print_every 100 \
  --save_dir ./experiment/quality_fashionmnist \
  "$@"
