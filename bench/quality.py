"""Sample quality of EBM training recipes side by side: each trains the same network on Fashion-MNIST for the same
wall-clock budget, then is scored the same way (test accuracy; FID/KID of its replay buffer and of new chains with
its own start and K, and of chains run --long_factor times longer), beside the real-data floor of that protocol.

    python bench/quality.py --minutes 6 --out bench/results/quality        # the README's table (about 80 min on 2 CPUs)
    python bench/quality.py --recipes majem maebm --minutes 2 --n_fresh 500
    python bench/quality.py --recipes --score_runs quickstart=experiment/quickstart_X --out Q   # score a finished run
Writes <out>/quality.md (the table), quality.json, quality.png (every recipe's grids side by side) and the runs
(<out>/runs/<recipe>, each with its eval_* folders). Refuses an --out that holds results unless --overwrite.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from utils.checkpoint import load_checkpoint  # noqa: E402
from utils.data import image_transform, load_dataset  # noqa: E402
from utils.errors import UserError, positive_float, positive_int, run_cli  # noqa: E402
from utils.fid import FidScorer  # noqa: E402

# Every recipe trains the same small CNN; what differs is the objective, the chains and their optimiser.
NETWORK = ["--model", "cnn", "--width", "1", "--norm", "batch"]
SGD = ["--optimizer", "sgd", "--lr", "0.05", "--warmup_iters", "200"]
# M-JEM's energy is the logsumexp of the logits, as the quickstart's: with upstream's separate head (--uncond) this
# net diverged at lr 0.05 (rolled back to 0.025 by the guard).
MAJEM = ["--px", "1", "--pyx", "1", "--init", "gm", "--n_steps", "5", "--sgld_lr", "1", "--sgld_std", "0.001",
         "--l2_coeff", "0.5"] + SGD
# name -> (what it is, training flags); each recipe's K is its --n_steps
RECIPES = {
    "majem": ("M-JEM: Gaussian start, K=5, p(x) + p(y|x) (upstream's published flags, logsumexp energy)", MAJEM),
    "majem_bf16": ("M-JEM with bf16 autocast for the loss and the chains, and channels_last (fast on CPUs with AMX)",
                   MAJEM + ["--amp", "on", "--amp_sampler", "on", "--channels_last", "on"]),
    "majem_class": ("M-JEM with one Gaussian per class (JEM++'s start)", MAJEM + ["--init", "gm_class"]),
    "maebm": ("M-EBM: Gaussian start, K=2, p(x) only", ["--px", "1", "--pyx", "0", "--uncond", "--init", "gm",
                                                       "--n_steps", "2", "--sgld_lr", "1", "--sgld_std", "0",
                                                       "--l2_coeff", "0.1"] + SGD),
    "jem": ("JEM: uniform start, persistent buffer, K=20", ["--px", "1", "--pyx", "1", "--init", "u", "--n_steps", "20",
                                                           "--sgld_lr", "1", "--sgld_std", "0.01", "--l2_coeff", "0"] + SGD),
    "shortrun": ("short-run, non-persistent: uniform start, no buffer, K=40 (Nijkamp et al.)",
                 ["--px", "1", "--pyx", "0", "--uncond", "--short_run", "--init", "u", "--sampler", "langevin",
                  "--n_steps", "40", "--sgld_lr", "1", "--sgld_std", "0.005", "--l2_coeff", "0", "--optimizer", "adam",
                  "--lr", "1e-4", "--weight_decay", "0", "--warmup_iters", "0"]),
    "tutorial": ("tutorial recipe: uniform start, buffer, 60 steps, noise 0.005 (UvA deep-energy-models)",
                 ["--px", "1", "--pyx", "0", "--uncond", "--init", "u", "--sampler", "tutorial", "--n_steps", "60",
                  "--sgld_lr", "10", "--sgld_std", "0.005", "--buffer_size", "8192", "--reg", "sym", "--l2_coeff", "0.1",
                  "--optimizer", "adam", "--lr", "1e-4", "--adam_beta1", "0", "--weight_decay", "0",
                  "--warmup_iters", "0", "--clip_grad", "0.1", "--batch_size", "128"]),
}
# Without chains: the same net, p(y|x) term and SGD as majem, so only the generative term differs. Samples come from
# annealed Langevin at NCSN's step-to-noise ratio (step 0.2 sigma^2 at each level: 2e-3 at sigma 0.1, 100x at 1).
ANNEALED = ["--sampler", "annealed", "--n_steps", "60", "--sgld_lr", "0.002", "--sgld_std", "0.063",
            "--anneal_factor", "100"]
CHAIN_FREE = ["--px", "1", "--pyx", "1", "--init", "gm"] + ANNEALED + SGD
RECIPES.update({
    "dsm": ("denoising score matching, noise levels 1 to 0.1, annealed Langevin samples (K=60)",
            CHAIN_FREE + ["--objective", "dsm", "--dsm_sigmas", "1", "0.5", "0.25", "0.1"]),
    "ssm": ("sliced score matching, one Rademacher projection, annealed Langevin samples (K=60); layer norm: "
            "SSM's third derivatives do not run through batch norm",
            CHAIN_FREE + ["--objective", "ssm", "--norm", "layer"]),
    "nce": ("NCE against the fitted Gaussian (exact density), 1 noise image per data image, log Z learned",
            CHAIN_FREE + ["--objective", "nce"]),
})


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES), help="rows, in this order")
    p.add_argument("--score_runs", nargs="+", default=[], metavar="NAME=RUN_DIR",
                   help="also score these finished training runs (e.g. a quickstart's) under the same protocol, "
                        "as rows after the recipes")
    p.add_argument("--minutes", type=positive_float, default=2.0, help="wall-clock training budget of each recipe")
    p.add_argument("--n_fresh", type=positive_int, default=2000, help="new chains scored per sampler setting")
    p.add_argument("--long_factor", type=positive_int, default=10, help="the long chains run this many times K steps")
    p.add_argument("--buffer_ratio", type=positive_float, default=0.2,
                   help="buffer images scored: this fraction per predicted class, most confident first (upstream's "
                        "selection; a p(x)-only model ranks by energy)")
    p.add_argument("--fid_ref_n", type=positive_int, default=2000, help="training images of the FID reference")
    p.add_argument("--inception_precision", default="bf16", choices=["exact", "bf16", "tf32"],
                   help="bf16: about 3x faster on CPUs with AMX; the floor is measured the same way")
    p.add_argument("--train_args", default="", help="extra flags for every training run, e.g. '--amp on'")
    p.add_argument("--data_root", default="./data")
    p.add_argument("--center_dir", default="./data/centers", help="one_center.py's output (fitted here if missing)")
    p.add_argument("--n_valid", type=positive_int, default=5000, help="training images held out (as the quickstart)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", default="bench/results/quality")
    p.add_argument("--overwrite", action="store_true", help="replace the results in --out")
    a = p.parse_args(argv)
    if a.buffer_ratio >= 1:
        raise UserError(f"--buffer_ratio: expected a fraction in (0, 1), got {a.buffer_ratio}")
    for item in a.score_runs:
        name, _, run_dir = item.partition("=")
        if not name or not os.path.isfile(os.path.join(run_dir, "last_ckpt.pt")):
            raise UserError(f"--score_runs: expected NAME=RUN_DIR with RUN_DIR/last_ckpt.pt, got {item!r}")
    if not a.recipes and not a.score_runs:
        raise UserError("--recipes: name at least one recipe, or give --score_runs")
    return a


def run(cmd, log):
    """Run one of the project's scripts; its output goes to `log`, a failure raises with the log's tail."""
    with open(log, "w") as fh:
        code = subprocess.call([sys.executable, *cmd], cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if code != 0:
        tail = open(log).read()[-1500:]
        raise UserError(f"{' '.join(cmd[:3])} ... failed with exit code {code}; log {log}:\n{tail}")


def ensure_centers(a):
    if not os.path.exists(os.path.join(a.center_dir, "fashionmnist_cov_class.pt")):
        os.makedirs(a.center_dir, exist_ok=True)
        run(["one_center.py", "--dataset", "fashionmnist", "--data_root", a.data_root, "--save_dir", a.center_dir,
             "--per_class"], os.path.join(a.out, "one_center.log"))


def train(a, name, run_dir, flags=None):
    """Train recipe `name` (or the given training flags) for --minutes into run_dir."""
    cmd = ["train_maebm.py", "--dataset", "fashionmnist", "--data_root", a.data_root, "--center_dir", a.center_dir,
           *NETWORK, *(RECIPES[name][1] if flags is None else flags), "--n_epochs", "1000", "--max_minutes", str(a.minutes), "--n_valid", str(a.n_valid),
           "--eval_every", "1000", "--novis", "--seed", str(a.seed), "--device", a.device, "--save_dir", run_dir,
           *a.train_args.split()]
    run(cmd, os.path.join(a.out, f"{name}_train.log"))


def training_minutes(run_dir):
    """Minutes from the run's first to its last log line: the training loop and its evaluations."""
    stamps = [line[:19] for line in open(os.path.join(run_dir, "log.txt")) if line[:4].isdigit()]
    first, last = (time.mktime(time.strptime(t, "%Y-%m-%d %H:%M:%S")) for t in (stamps[0], stamps[-1]))
    return (last - first) / 60


def evaluate(a, ckpt, mode, out, *flags):
    """One eval_maebm.py call; returns its JSON result."""
    run(["eval_maebm.py", "--load_path", ckpt, "--eval", mode, "--variant", "project", "--save_dir", out,
         "--fid_ref_n", str(a.fid_ref_n), "--inception_precision", a.inception_precision, "--seed", str(a.seed),
         "--device", a.device, *flags], out + ".log")
    return json.load(open(os.path.join(out, f"{mode}.json")))


def scores(result):
    return {"fid": result["fid"], "kid": result["kid_mean"], "n": result["n_samples"]}


def score_run(a, run_dir):
    """Accuracy, buffer scores and new-chain scores (K and long_factor x K steps, chains in batches of the run's
    --batch_size, as BatchNorm saw them in training) of a training run's last checkpoint."""
    ckpt = os.path.join(run_dir, "last_ckpt.pt")
    state = load_checkpoint(ckpt)
    flags, k = state["args"], state["args"]["n_steps"]
    ev = lambda tag: os.path.join(run_dir, f"eval_{tag}")
    row = {"k": k, "iterations": state["iteration"], "run_dir": run_dir, "train_minutes": training_minutes(run_dir),
           "rollbacks": state["rollbacks"]}
    if flags["pyx"] > 0:
        row["test_acc"] = evaluate(a, ckpt, "test_clf", ev("test_clf"))["test_acc"]
    if state.get("replay_buffer") is not None:
        row["buffer"] = scores(evaluate(a, ckpt, "fid", ev("buffer"), "--ratio", str(a.buffer_ratio)))
    for tag, steps in (("fresh", k), ("long", a.long_factor * k)):
        row[tag] = scores(evaluate(a, ckpt, "fid", ev(tag), "--fresh_samples", str(a.n_fresh), "--n_sample_steps",
                                   str(steps), "--batch_size", str(flags["batch_size"])))
        row[tag]["steps"] = steps
    return row


def real_data_floor(a):
    """FID/KID of n_fresh real test images under the same protocol: the best any sampler can score."""
    device = torch.device("cuda" if a.device != "cpu" and torch.cuda.is_available() else "cpu")
    load = lambda train: load_dataset("fashionmnist", a.data_root, train, image_transform("fashionmnist", False))
    test = load(False)
    pick = torch.randperm(len(test), generator=torch.Generator().manual_seed(a.seed))[:a.n_fresh]
    images = torch.stack([test[i][0] for i in pick.tolist()])
    scorer = FidScorer(load(True), os.path.join(a.data_root, "fid_stats"), "fashionmnist", device, 100, a.fid_ref_n,
                       a.seed, None, a.inception_precision)
    result = scorer.score(images)
    return {"fid": result["fid"], "kid": result["kid_mean"], "n": len(images), "convention": result["convention"],
            "precision": result["inception_precision"], "reference": f"{a.fid_ref_n} training images"}


def cell(row, key, field="fid", fmt="{:.1f}"):
    return fmt.format(row[key][field]) if key in row else "-"


def markdown(a, rows, floor):
    trained = [r["recipe"] for r in rows if r.get("trained")]
    scored = [r["recipe"] for r in rows if not r.get("trained")]
    budget = "; ".join(([f"{', '.join(trained)}: {a.minutes:g} min of training each"] if trained else []) +
                       ([f"{', '.join(scored)}: scored as trained elsewhere (its training minutes in the table)"]
                        if scored else []))
    head = (f"Fashion-MNIST, small CNN (`{' '.join(NETWORK)}`); {budget}. FID/KID: "
            f"{floor['convention']}, Inception {floor['precision']}, reference {floor['reference']}; buffer: top "
            f"{a.buffer_ratio:g} per predicted class (by energy for p(x)-only models); new chains: {a.n_fresh} from the "
            f"recipe's own start, its K and {a.long_factor}x K steps. Real-data floor: {floor['n']} test images, "
            f"FID {floor['fid']:.1f}, KID {floor['kid']:.4f}.\n\n")
    lines = ["| recipe | iterations (rollbacks) | test acc | buffer FID | buffer KID | new chains K | FID (K) | KID (K) | "
             f"FID ({a.long_factor}x K) | long / K | minutes |", "|" + "---|" * 11]
    lines.append(f"| real test images (floor) | - | - | {floor['fid']:.1f} | {floor['kid']:.4f} | - | {floor['fid']:.1f} | "
                 f"{floor['kid']:.4f} | - | - | - |")
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['recipe']} | failed: {r['error']} |" + " |" * 9)
            continue
        acc = f"{100 * r['test_acc']:.2f}%" if "test_acc" in r else "-"
        lines.append(f"| {r['recipe']} | {r['iterations']} ({r['rollbacks']}) | {acc} | {cell(r, 'buffer')} | "
                     f"{cell(r, 'buffer', 'kid', '{:.4f}')} | {r['k']} | {cell(r, 'fresh')} | "
                     f"{cell(r, 'fresh', 'kid', '{:.4f}')} | {cell(r, 'long')} | "
                     f"{r['long']['fid'] / r['fresh']['fid']:.2f} | {r['train_minutes']:.1f} |")
    lines += ["", *[f"- `{r['recipe']}`: {r['what']}" for r in rows]]
    return head + "\n".join(lines) + "\n"


def figure(rows, path):
    """One row per recipe: the scored buffer images, new chains of K steps, and of long_factor x K steps."""
    columns = [("buffer", "buffer"), ("fresh", "new chains, K steps"), ("long", "new chains, long")]
    rows = [r for r in rows if "error" not in r]
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3.1 * len(rows)), squeeze=False)
    for i, r in enumerate(rows):
        for j, (tag, title) in enumerate(columns):
            ax = axes[i, j]
            ax.axis("off")
            png = os.path.join(r["run_dir"], f"eval_{tag}", "fid_samples.png")
            if tag in r and os.path.exists(png):
                ax.imshow(plt.imread(png), cmap="gray")
                ax.set_title(f"{r['recipe']}: {title}\nFID {r[tag]['fid']:.1f}" +
                             (f" ({r[tag]['steps']} steps)" if "steps" in r[tag] else ""), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def prepare_out(a):
    if os.path.exists(os.path.join(a.out, "quality.json")) or os.path.isdir(os.path.join(a.out, "runs")):
        if not a.overwrite:
            raise UserError(f"--out {a.out} holds results already; pass --overwrite to replace them")
        shutil.rmtree(os.path.join(a.out, "runs"), ignore_errors=True)
    os.makedirs(os.path.join(a.out, "runs"), exist_ok=True)


def main(argv=None):
    a = parse(argv)
    prepare_out(a)
    ensure_centers(a)
    floor, rows = real_data_floor(a), []
    jobs = [(name, RECIPES[name][0], os.path.join(a.out, "runs", name), True) for name in a.recipes]
    # a scored run is named by its directory's name alone: the table must not hold a path of this machine
    jobs += [(name, f"scored run {os.path.basename(os.path.normpath(run_dir))}", run_dir, False)
             for name, _, run_dir in (item.partition("=") for item in a.score_runs)]
    for name, what, run_dir, to_train in jobs:
        try:
            if to_train:
                train(a, name, run_dir)
            row = {"recipe": name, "what": what, "trained": to_train, **score_run(a, run_dir)}
        except UserError as e:  # a recipe that diverges or fails is a row of the table, not the end of the bench
            row = {"recipe": name, "what": what, "trained": to_train, "error": str(e).splitlines()[0]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    info = {"minutes_each": a.minutes, "n_fresh": a.n_fresh, "long_factor": a.long_factor, "floor": floor,
            "train_args": a.train_args, "torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}
    with open(os.path.join(a.out, "quality.json"), "w") as fh:
        json.dump(info, fh, indent=2)
    table = markdown(a, rows, floor)
    with open(os.path.join(a.out, "quality.md"), "w") as fh:
        fh.write(table)
    figure(rows, os.path.join(a.out, "quality.png"))
    print(table)
    print(f"wrote {a.out}/quality.md, quality.json, quality.png")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
