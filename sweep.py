"""Train over a grid of settings (sampler steps, step size, learning rate, spectral norm); one CSV, one figure.

Every combination runs train_maebm.py into <save_dir>/<setting>; any flag not listed here is passed to each run
unchanged. sweep.csv gets one row per setting as soon as it ends (status ok / diverged / failed, rollbacks,
test accuracy of the final checkpoint, FID/KID of its replay buffer with --fid, minutes of training) and
sweep.png summarises accuracy, FID and stability. --resume skips settings that already have a row. Example:
  python sweep.py --n_steps 5 10 --sgld_lr 1 --lr 0.05 0.1 --spectral_norm off on --save_dir experiment/sweep \\
      --dataset fashionmnist --model cnn --width 1 --n_epochs 2
"""
import csv
import io
import itertools
import json
import os
import subprocess
import sys
import time

from train_maebm import build_parser as train_parser
from utils.checkpoint import atomic_write_text, load_checkpoint
from utils.errors import ArgumentParser, UserError, positive_float, positive_int, run_cli
from utils.run_dir import read_metrics

HERE = os.path.dirname(os.path.abspath(__file__))
COLUMNS = ["setting", "n_steps", "sgld_lr", "lr", "spectral_norm", "status", "rollbacks", "iterations", "test_acc",
           "fid", "kid", "final_loss", "energy_gap", "minutes"]


def build_parser():
    p = ArgumentParser("sweep.py", description=__doc__.split("\n")[0],
                       example="python sweep.py --n_steps 5 10 --lr 0.05 0.1 --save_dir experiment/sweep --model cnn --width 1 --n_epochs 1")
    p.add_argument("--n_steps", nargs="+", type=positive_int, default=[10], help="sampler steps per iteration")
    p.add_argument("--sgld_lr", nargs="+", type=positive_float, default=[1.0], help="sampler step sizes")
    p.add_argument("--lr", nargs="+", type=positive_float, default=[0.1], help="learning rates")
    p.add_argument("--spectral_norm", nargs="+", choices=["off", "on"], default=["off"], help="spectral normalisation off and/or on")
    p.add_argument("--fid", action="store_true", help="FID/KID of each final replay buffer (eval_maebm.py --eval fid)")
    p.add_argument("--fid_ref_n", type=int, default=10000, help="training images for the FID reference statistics")
    p.add_argument("--save_dir", default="./experiment/sweep", help="sweep directory (refused if it holds one)")
    p.add_argument("--resume", action="store_true", help="continue a sweep: skip settings already in sweep.csv")
    return p


def settings(args):
    for n_steps, sgld_lr, lr, sn in itertools.product(args.n_steps, args.sgld_lr, args.lr, args.spectral_norm):
        yield {"setting": f"K{n_steps}_slr{sgld_lr:g}_lr{lr:g}_sn{sn}", "n_steps": n_steps, "sgld_lr": sgld_lr,
               "lr": lr, "spectral_norm": sn}


def last_value(rows, key):
    values = [r[key] for r in rows if key in r]
    return values[-1] if values else ""


def run_setting(setting, train_args, args):
    """Train one setting (and score its buffer); returns its table row."""
    run = os.path.join(args.save_dir, setting["setting"])
    cmd = [sys.executable, os.path.join(HERE, "train_maebm.py"), *train_args, "--n_steps", str(setting["n_steps"]),
           "--sgld_lr", str(setting["sgld_lr"]), "--lr", str(setting["lr"]), "--save_dir", run, "--overwrite"]
    if setting["spectral_norm"] == "on":
        cmd.append("--spectral_norm")
    started = time.time()
    with open(run + ".log", "w") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
    row = dict(setting, minutes=round((time.time() - started) / 60, 3), rollbacks="", iterations="", test_acc="",
               fid="", kid="")
    tail = open(run + ".log").read().strip().splitlines()[-1:] or [""]
    row["status"] = "ok" if rc == 0 else ("diverged" if "diverged" in tail[0] else "failed")
    metrics = os.path.join(run, "metrics.jsonl")
    rows = read_metrics(metrics)
    row["final_loss"] = last_value(rows, "loss/total")
    row["energy_gap"] = last_value(rows, "diag/energy_gap")
    if os.path.exists(os.path.join(run, "last_ckpt.pt")):
        ckpt = load_checkpoint(os.path.join(run, "last_ckpt.pt"))
        row["rollbacks"], row["iterations"] = ckpt["rollbacks"], ckpt["iteration"]
    if rc == 0:
        # the final checkpoint's accuracy: a run cut by --max_iters ends between the epoch-end evaluations
        scores = evaluate(run, "test_clf")
        if scores is not None:
            row["test_acc"] = scores["test_acc"]
    if args.fid and rc == 0:
        scores = evaluate(run, "fid", "--fid_ref_n", str(args.fid_ref_n))
        if scores is not None:
            row["fid"], row["kid"] = scores["fid"], scores["kid_mean"]
    return row


def evaluate(run, mode, *extra):
    """eval_maebm.py --eval mode on the run's last checkpoint: its JSON, or None (reason in <run>.log)."""
    out = os.path.join(run, f"eval_{mode}")
    with open(run + ".log", "a") as log:
        rc = subprocess.run([sys.executable, os.path.join(HERE, "eval_maebm.py"), "--load_path",
                             os.path.join(run, "last_ckpt.pt"), "--eval", mode, "--save_dir", out, *extra],
                            stdout=log, stderr=subprocess.STDOUT).returncode
    return json.load(open(os.path.join(out, f"{mode}.json"))) if rc == 0 else None


def write_csv(path, rows):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def plot_summary(path, rows):
    """Accuracy, FID and stability (rollbacks; diverged/failed runs in red) per setting."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [r["setting"] for r in rows]
    num = lambda v: float(v) if v not in ("", None) else float("nan")
    colours = ["tab:blue" if r["status"] == "ok" else "tab:red" for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 0.45 * len(rows) + 1.8), sharey=True)
    panels = (("test accuracy", [num(r["test_acc"]) for r in rows]), ("FID (replay buffer)", [num(r["fid"]) for r in rows]),
              ("rollbacks (red: diverged or failed)", [num(r["rollbacks"]) for r in rows]))
    for ax, (title, values) in zip(axes, panels):
        bars = ax.barh(names, [0 if v != v else v for v in values], color=colours)
        ax.bar_label(bars, labels=["n/a" if v != v else f"{v:.3g}" for v in values], padding=3)
        ax.set_xlim(0, 1.25 * max([v for v in values if v == v] + [1]))
        ax.set_title(title)
    for y, r in enumerate(rows):  # the status word, so an all-zero stability panel still says something
        axes[2].text(axes[2].get_xlim()[1] * 0.98, y, r["status"], ha="right", va="center")
    axes[0].invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    args, train_args = build_parser().parse_known_args(argv)
    if "--save_dir" in train_args or "--resume" in train_args:
        raise UserError("--save_dir/--resume are the sweep's own; each setting runs in <save_dir>/<setting>")
    train_parser().parse_args(train_args)  # a mistyped training flag fails here once, not in every run
    csv_path = os.path.join(args.save_dir, "sweep.csv")
    done = []
    if args.resume:
        if not os.path.exists(csv_path):
            raise UserError(f"--resume: {csv_path} does not exist")
        done = list(csv.DictReader(open(csv_path)))
    elif os.path.isdir(args.save_dir) and os.listdir(args.save_dir):
        raise UserError(f"--save_dir: {args.save_dir} already holds a sweep; pass --resume to continue it")
    os.makedirs(args.save_dir, exist_ok=True)
    rows = list(done)
    finished = {r["setting"] for r in done}
    grid = list(settings(args))
    for i, setting in enumerate(grid, 1):
        if setting["setting"] in finished:
            continue
        print(f"sweep: setting {i} of {len(grid)}: {setting['setting']}", flush=True)
        row = run_setting(setting, train_args, args)
        rows.append(row)
        write_csv(csv_path, rows)
        print(f"  {row['status']}: test_acc={row['test_acc']} fid={row['fid']} rollbacks={row['rollbacks']} "
              f"minutes={row['minutes']}", flush=True)
    plot_summary(os.path.join(args.save_dir, "sweep.png"), rows)
    print(f"sweep: {len(rows)} settings in {csv_path} and {os.path.join(args.save_dir, 'sweep.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
