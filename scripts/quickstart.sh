#!/usr/bin/env bash
# From a fresh clone: set up .venv, fit the Fashion-MNIST Gaussians (one per class: the starts that scored best in
# bench/quality.py), train M-JEM for a few minutes on the CPU (or GPU), draw 100 new chains the way training ran
# its chains, then print the test accuracy and where the sample grids are. Extra arguments go to train_maebm.py.
# channels_last: the fastest policy on the CPU with the same quality at equal iterations (docs/speed.md).
# LeakyReLU as published: SiLU, better in 3-minute runs, collapsed the buffer onto three classes at this full length
# (docs/recipes.md, "SiLU at the quickstart's full length").
# A constant lr with a weight average (0.999) for the classifier, not lr decays: after a decay the persistent chains
# drift onto a few classes and the buffer's FID rises and spreads across seeds (docs/recipes.md, "Ten epochs").
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
if wants_help "$@"; then
  echo "usage: bash scripts/quickstart.sh [train_maebm.py flags, which override the quickstart's]"
  exec "$PY" train_maebm.py --help
fi
bash scripts/setup_env.sh
PY=$(find_python)  # the environment set up just now
RUN=${RUN:-experiment/quickstart_$(date +%Y%m%d_%H%M%S)}
"$PY" one_center.py --dataset fashionmnist --data_root "$DATA_ROOT" --save_dir "$CENTER_DIR" --per_class
echo "run directory: $RUN"
"$PY" train_maebm.py --dataset fashionmnist --data_root "$DATA_ROOT" --center_dir "$CENTER_DIR" \
  --model cnn --width 1 --norm batch --channels_last on \
  --px 1.0 --pyx 1.0 --init gm_class --n_steps 5 --sgld_lr 1 --sgld_std 0.001 --l2_coeff 0.5 \
  --lr 0.05 --warmup_iters 200 --n_epochs 10 --decay_rate 1 --ema 0.999 --n_valid 5000 \
  --plot_uncond --plot_every 200 --save_dir "$RUN" "$@"
"$PY" eval_maebm.py --load_path "$RUN/last_ckpt.pt" --eval gen --variant project --n_samples 100 --no_fid
"$PY" - "$RUN" <<'PYEOF'
import glob, json, sys
run = sys.argv[1]
rows = [json.loads(line) for line in open(f"{run}/metrics.jsonl")]
acc = [r for r in rows if "test/acc" in r][-1]
key, which = ("test_ema/acc", " (the weight average, which evaluation uses)") if "test_ema/acc" in acc else ("test/acc", "")
print(f"test accuracy after epoch {acc['epoch']}: {100 * acc[key]:.2f}%{which}")
grids = sorted(glob.glob(f"{run}/samples/*.png"))
print(f"sample grids: {run}/samples/ ({len(grids)} PNGs, newest {grids[-1] if grids else 'none'})")
print(f"100 new chains from the fitted Gaussian: {run}/eval_gen/gen_samples.png")
print(f"checkpoints and logs: {run}/ (TensorBoard: tensorboard --logdir {run}/tb)")
PYEOF
