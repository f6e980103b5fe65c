"""Sample quality of EBM training recipes side by side: each trains the same network on Fashion-MNIST for the same
wall-clock budget, then is scored the same way (test accuracy; FID/KID of its replay buffer and of new chains with
its own start and K, and of chains run --long_factor times longer), beside the real-data floor of that protocol.

    python bench/quality.py --minutes 6 --out bench/results/quality        # the README's table (about 80 min on 2 CPUs)
    python bench/quality.py --recipes majem maebm --minutes 2 --n_fresh 500
    python bench/quality.py --recipes --score_runs quickstart=experiment/quickstart_X --out Q   # score a finished run
    python bench/quality.py --recipes majem_class --variant "ema=majem_class --ema 0.99" --seeds 1 2 --jobs 2
Writes <out>/quality.md (the table; with several seeds each cell is mean (min-max)), quality.json, quality.png
(every recipe's grids side by side, beside real test images) and the runs (<out>/runs/<recipe>, or
<recipe>_seed<S> with several seeds, each with its eval_* folders). Refuses an --out that holds results unless
--overwrite.
"""
from concurrent.futures import ThreadPoolExecutor
import copy
import json
import os
import shlex
import shutil
import statistics
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
from utils.errors import ArgumentParser, UserError, fid_images, nonneg_int, positive_float, positive_int, run_cli  # noqa: E402
from utils.evaluation.generative import random_grid  # noqa: E402
from utils.fid import FidScorer  # noqa: E402
from utils.precision import cpu_has_amx  # noqa: E402

# Every recipe trains the same small CNN; what differs is the objective, the chains and their optimiser.
NETWORK = ["--model", "cnn", "--width", "1", "--norm", "batch"]
SGD = ["--optimizer", "sgd", "--lr", "0.05", "--warmup_iters", "200"]
# Each baseline that publishes its own optimiser trains with it: JEM's Adam 1e-4 with 1,000 warm-up iterations.
JEM_ADAM = ["--optimizer", "adam", "--lr", "1e-4", "--weight_decay", "0", "--warmup_iters", "1000"]
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
    "majem_silu": ("M-JEM with one Gaussian per class and SiLU activations (JEM issue #8's advice against "
                   "divergence)", MAJEM + ["--init", "gm_class", "--act", "silu"]),
    "majem_ga": ("M-JEM with one Gaussian per class, noise-free gradient ascent instead of SGLD (the Energy_Models "
                 "thesis's claim)", MAJEM + ["--init", "gm_class", "--sgld_std", "0"]),
    "jem": ("JEM as published: its sample_q (eval mode, unclamped gradient and x), uniform start, buffer 10,000, "
            "reinit 0.05, K=20, step 1, noise 0.01, data noise 0.03, its Adam 1e-4",
            ["--px", "1", "--pyx", "1", "--init", "u", "--sampler", "jem", "--n_steps", "20", "--sgld_lr", "1",
             "--sgld_std", "0.01", "--buffer_size", "10000", "--reinit_freq", "0.05", "--sigma", "0.03",
             "--l2_coeff", "0"] + JEM_ADAM),
    "shortrun": ("short-run, non-persistent: uniform start, no buffer, K=40, its Adam 1e-4 (Nijkamp et al.)",
                 ["--px", "1", "--pyx", "0", "--uncond", "--short_run", "--init", "u", "--sampler", "langevin",
                  "--n_steps", "40", "--sgld_lr", "1", "--sgld_std", "0.005", "--l2_coeff", "0", "--optimizer", "adam",
                  "--lr", "1e-4", "--weight_decay", "0", "--warmup_iters", "0"]),
    "tutorial": ("tutorial recipe: uniform start, buffer, 60 steps, noise 0.005, its Adam 1e-4 with beta1 0 (UvA "
                 "deep-energy-models)",
                 ["--px", "1", "--pyx", "0", "--uncond", "--init", "u", "--sampler", "tutorial", "--n_steps", "60",
                  "--sgld_lr", "10", "--sgld_std", "0.005", "--buffer_size", "8192", "--reg", "sym", "--l2_coeff", "0.1",
                  "--optimizer", "adam", "--lr", "1e-4", "--adam_beta1", "0", "--weight_decay", "0",
                  "--warmup_iters", "0", "--clip_grad", "0.1", "--batch_size", "128"]),
}
# Energy Matching's net and optimiser, which the chain-free rows share: no BatchNorm (a velocity or score must not
# depend on the batch), SiLU, Adam 1e-3 with the gradient clipped at 1 (the paper's 10,000 warm-up iterations
# shortened to the budget).
SCORE_NET_ADAM = ["--norm", "none", "--act", "silu", "--optimizer", "adam", "--lr", "1e-3", "--weight_decay", "0",
                  "--warmup_iters", "100", "--clip_grad", "1"]
# Energy Matching's flow phase with the paper's sampler: K=200 at dt 0.01, a noise-free flow to t=1, then Langevin at
# temperature 0.01.
ENERGY_MATCHING = ["--px", "1", "--pyx", "1", "--init", "gm", "--objective", "energy_matching", "--sampler", "flow",
                   "--n_steps", "200", "--sgld_lr", "0.01", "--sgld_std", "0.014"] + SCORE_NET_ADAM
# Without chains: samples by the annealed sampler at NCSN's step schedule (0.2 sigma^2 at each level: 2e-3 at sigma
# 0.1, 100x at 1) without noise: at temperature 1 the chains of one time-independent energy stay as far from the
# data as its largest noise level (the sampler sweep in docs/recipes.md).
ANNEALED = ["--sampler", "annealed", "--n_steps", "60", "--sgld_lr", "0.002", "--sgld_std", "0", "--anneal_factor",
            "100"]
CHAIN_FREE = ["--px", "1", "--pyx", "1", "--init", "gm"] + ANNEALED + SCORE_NET_ADAM
RECIPES.update({
    "energy_matching": ("Energy Matching, flow phase: -grad E regresses OT-paired straight paths from the fitted "
                        "Gaussian to the data; samples by its gradient flow then a Langevin tail (K=200)",
                        ENERGY_MATCHING),
    "dsm": ("denoising score matching, noise levels 1 to 0.025, per-pixel loss, annealed noise-free samples (K=60)",
            CHAIN_FREE + ["--objective", "dsm", "--sm_scale", "pixel", "--dsm_sigmas", "1", "0.5", "0.25", "0.1",
                          "0.05", "0.025"]),
    "ssm": ("sliced score matching, one Rademacher projection, per-pixel loss, annealed noise-free samples (K=60)",
            CHAIN_FREE + ["--objective", "ssm", "--sm_scale", "pixel"]),
    "nce": ("NCE against the fitted Gaussian (exact density), 1 noise image per data image, log Z learned",
            CHAIN_FREE + ["--objective", "nce"]),
})


def parse(argv):
    p = ArgumentParser("bench/quality.py", description=__doc__.split("\n")[0],
                       example="python bench/quality.py --recipes majem_class jem --seeds 1 2 --minutes 2")
    p.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES), help="rows, in this order")
    p.add_argument("--variant", action="append", default=[], metavar="'NAME=RECIPE FLAGS'",
                   help="also a row NAME: RECIPE's flags followed by FLAGS (which override them), e.g. "
                        "'ema=majem_class --ema 0.99'; repeat for several")
    p.add_argument("--score_runs", nargs="+", default=[], metavar="NAME=RUN_DIR",
                   help="also score these finished training runs (e.g. a quickstart's) under the same protocol, "
                        "as rows after the recipes")
    p.add_argument("--minutes", type=positive_float, default=2.0, help="wall-clock training budget of each recipe")
    p.add_argument("--n_fresh", type=fid_images, default=2000, help="new chains scored per sampler setting")
    p.add_argument("--long_factor", type=nonneg_int, default=10,
                   help="the long chains run this many times K steps (0: no long chains)")
    p.add_argument("--buffer_ratio", type=positive_float, default=0.2,
                   help="buffer images scored: this fraction per predicted class, most confident first (upstream's "
                        "selection; a p(x)-only model ranks by energy)")
    p.add_argument("--fid_ref_n", type=fid_images, default=2000, help="training images of the FID reference")
    p.add_argument("--inception_precision", default="auto", choices=["auto", "exact", "bf16", "tf32"],
                   help="auto: bf16 on CUDA and on CPUs with AMX (about 3x faster there), else exact (on a CPU without "
                        "AMX, bf16 Inception ran 6x slower than fp32); the floor is measured the same way")
    p.add_argument("--train_args", default="", help="extra flags for every training run, e.g. '--amp on'")
    p.add_argument("--data_root", default="./data")
    p.add_argument("--center_dir", default="./data/centers", help="one_center.py's output (fitted here if missing)")
    p.add_argument("--n_valid", type=positive_int, default=5000, help="training images held out (as the quickstart)")
    p.add_argument("--seeds", nargs="+", type=nonneg_int, default=[1],
                   help="every row trains and scores once per seed; with several, the table shows mean (min-max)")
    p.add_argument("--jobs", type=positive_int, default=1, help="runs at a time")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch threads of each training and scoring run (default: torch's own choice)")
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
    a.variants = dict(parse_variant(item) for item in a.variant)
    if a.inception_precision == "auto":
        fast_bf16 = cpu_has_amx() or (a.device != "cpu" and torch.cuda.is_available())
        a.inception_precision = "bf16" if fast_bf16 else "exact"
    if not a.recipes and not a.score_runs and not a.variants:
        raise UserError("--recipes: name at least one recipe, or give --variant or --score_runs")
    if len(set(a.seeds)) != len(a.seeds):
        raise UserError(f"--seeds: expected distinct seeds, got {a.seeds}")
    return a


def parse_variant(item):
    """'NAME=RECIPE FLAGS' -> (NAME, (what it is, RECIPE's flags + FLAGS))."""
    name, _, rest = item.partition("=")
    words = shlex.split(rest)
    if not name or name in RECIPES or not words or words[0] not in RECIPES:
        raise UserError(f"--variant: expected 'NAME=RECIPE FLAGS' with a new NAME and RECIPE one of "
                        f"{', '.join(RECIPES)}, got {item!r}")
    return name, (f"{words[0]} with `{' '.join(words[1:])}`", RECIPES[words[0]][1] + words[1:])


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


def train(a, name, run_dir, flags):
    """Train with the given flags for --minutes into run_dir."""
    cmd = ["train_maebm.py", "--dataset", "fashionmnist", "--data_root", a.data_root, "--center_dir", a.center_dir,
           *NETWORK, *flags, "--n_epochs", "1000", "--max_minutes", str(a.minutes), "--n_valid", str(a.n_valid),
           "--eval_every", "1000", "--novis", "--seed", str(a.seed), "--device", a.device, "--save_dir", run_dir,
           *a.train_args.split()]
    run(cmd, run_dir + "_train.log")


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
    """The row's numbers of one eval result; for the buffer also its diagnosis (class shares, chain ages)."""
    out = {"fid": result["fid"], "kid": result["kid_mean"], "n": result["n_samples"]}
    if "buffer_class_counts" in result:
        counts = result["buffer_class_counts"]
        out.update({"class_counts": counts, "scored_class_counts": result["scored_class_counts"],
                    "min_class_share": min(counts) / sum(counts), "max_class_share": max(counts) / sum(counts),
                    "per_class_fid": {c: v["fid"] for c, v in result["per_class"].items()},
                    **{k: result[k] for k in ("buffer_mean_steps", "scored_mean_steps") if k in result}})
    return out


def score_run(a, run_dir):
    """Accuracy, buffer scores and new-chain scores (K and long_factor x K steps, chains in batches of the run's
    --batch_size, as BatchNorm saw them in training) of a training run's last checkpoint."""
    ckpt = os.path.join(run_dir, "last_ckpt.pt")
    state = load_checkpoint(ckpt)
    flags, k = state["args"], state["args"]["n_steps"]
    ev = lambda tag: os.path.join(run_dir, f"eval_{tag}")
    row = {"k": k, "iterations": state["iteration"], "run_dir": run_dir, "train_minutes": training_minutes(run_dir),
           "rollbacks": state["rollbacks"], "train_seed": flags["seed"]}
    if flags["pyx"] > 0:
        row["test_acc"] = evaluate(a, ckpt, "test_clf", ev("test_clf"))["test_acc"]
    if state.get("replay_buffer") is not None:
        row["buffer"] = scores(evaluate(a, ckpt, "fid", ev("buffer"), "--ratio", str(a.buffer_ratio)))
    for tag, steps in (("fresh", k), ("long", a.long_factor * k))[:2 if a.long_factor else 1]:
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
    random_grid(images, os.path.join(a.out, "real_test_images.png"), a.seed)
    return {"fid": result["fid"], "kid": result["kid_mean"], "n": len(images), "convention": result["convention"],
            "precision": result["inception_precision"], "reference": f"{a.fid_ref_n} training images"}


def spread(values, fmt="{:.1f}"):
    """One value as `fmt`; several (one per seed) as 'mean (min-max)'."""
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.mean(values))} ({min(values):.4g}-{max(values):.4g})"


def cell(runs, key, field="fid", fmt="{:.1f}", scale=1):
    """A column of the table: the seeds' runs' value of row[key][field] (or row[key]), '-' where a run lacks it."""
    values = [scale * (r[key][field] if field else r[key]) for r in runs if key in r]
    return spread(values, fmt) if len(values) == len(runs) else "-"


def markdown(a, rows, floor):
    names = list(dict.fromkeys(r["recipe"] for r in rows))
    groups = {name: [r for r in rows if r["recipe"] == name] for name in names}
    trained = [n for n in names if groups[n][0]["trained"]]
    scored = [n for n in names if not groups[n][0]["trained"]]
    budget = "; ".join(([f"{', '.join(trained)}: {a.minutes:g} min of training each"] if trained else []) +
                       ([f"{', '.join(scored)}: scored as trained elsewhere (its training minutes in the table)"]
                        if scored else []))
    seeds = (f"training seeds {', '.join(map(str, a.seeds))}" if trained else "each scored run's own training seed") + \
        "; mean (min-max) where a row has several runs"
    threads = f"{a.threads} thread(s) per run, " if a.threads else ""
    head = (f"Fashion-MNIST, small CNN (`{' '.join(NETWORK)}`, unless a recipe's flags below override them); "
            f"{budget}; {seeds}; {threads}{a.jobs} run(s) at a time. FID/KID: {floor['convention']}, Inception "
            f"{floor['precision']}, reference {floor['reference']}; "
            f"buffer: top {a.buffer_ratio:g} per predicted class (by energy for p(x)-only models); new chains: "
            f"{a.n_fresh} from the recipe's own start, its K" + (f" and {a.long_factor}x K" if a.long_factor else "") +
            f" steps. Real-data floor: "
            f"{floor['n']} test images, FID {floor['fid']:.1f}, KID {floor['kid']:.4f}.\n\n")
    long = f"{a.long_factor}x K" if a.long_factor else "long"
    lines = ["| recipe | iterations | rollbacks | test acc | buffer FID | buffer KID | new chains K | FID (K) | "
             f"KID (K) | FID ({long}) | long / K | minutes |", "|" + "---|" * 12]
    lines.append(f"| real test images (floor) | - | - | - | {floor['fid']:.1f} | {floor['kid']:.4f} | - | "
                 f"{floor['fid']:.1f} | {floor['kid']:.4f} | - | - | - |")
    for name, group in groups.items():
        runs = [{**r, **({"long_over_k": r["long"]["fid"] / r["fresh"]["fid"]} if "long" in r else {})}
                for r in group if "error" not in r]
        failed = [f"seed {r['seed']} failed: {r['error']}" for r in group if "error" in r]
        if not runs:
            lines.append(f"| {name} | {'; '.join(failed)} |" + " |" * 10)
            continue
        lines.append(f"| {name} | {cell(runs, 'iterations', None, '{:.0f}')} | "
                     f"{cell(runs, 'rollbacks', None, '{:.1f}')} | {cell(runs, 'test_acc', None, '{:.2f}%', 100)} | {cell(runs, 'buffer')} | "
                     f"{cell(runs, 'buffer', 'kid', '{:.4f}')} | {runs[0]['k']} | {cell(runs, 'fresh')} | "
                     f"{cell(runs, 'fresh', 'kid', '{:.4f}')} | {cell(runs, 'long')} | "
                     f"{cell(runs, 'long_over_k', None, '{:.2f}')} | {cell(runs, 'train_minutes', None)} |"
                     + (f" ({'; '.join(failed)})" if failed else ""))
    lines += ["", *[f"- `{name}`: {group[0]['what']}" for name, group in groups.items()]]
    return head + "\n".join(lines) + "\n"


def figure(rows, floor, real_png, path):
    """One row per recipe (its first seed that ran): real test images beside the scored buffer images, new chains of
    K steps, and of long_factor x K steps."""
    columns = [("buffer", "buffer"), ("fresh", "new chains, K steps"), ("long", "new chains, long")]
    rows = list({r["recipe"]: r for r in reversed(rows) if "error" not in r}.values())[::-1]
    fig, axes = plt.subplots(len(rows), 4, figsize=(12, 3.1 * len(rows)), squeeze=False)
    for i, r in enumerate(rows):
        axes[i, 0].axis("off")
        axes[i, 0].imshow(plt.imread(real_png), cmap="gray")
        axes[i, 0].set_title(f"real test images\nFID {floor['fid']:.1f} (the floor)", fontsize=8)
        for j, (tag, title) in enumerate(columns, start=1):
            ax = axes[i, j]
            ax.axis("off")
            png = os.path.join(r["run_dir"], f"eval_{tag}", "fid_samples.png")
            if tag in r and os.path.exists(png):
                ax.imshow(plt.imread(png), cmap="gray")
                ax.set_title(f"{r['recipe']} (seed {r['train_seed']}): {title}\nFID {r[tag]['fid']:.1f}" +
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


def run_job(a, job):
    """Train (unless it is a finished run to score) and score one row's run for one seed; a failure is a row."""
    name, what, flags, seed, run_dir = job
    b = copy.copy(a)
    b.seed = seed
    row = {"recipe": name, "what": what, "trained": flags is not None, "seed": seed}
    try:
        if flags is not None:
            train(b, name, run_dir, flags)
        row.update(score_run(b, run_dir))
    except UserError as e:  # a recipe that diverges or fails is a row of the table, not the end of the bench
        row["error"] = str(e).splitlines()[0]
    print(json.dumps(row), flush=True)
    return row


def jobs(a):
    """(name, what, training flags or None, seed, run dir) of every run, rows in order, seeds within a row."""
    rows = [(name, *RECIPES[name]) for name in a.recipes] + [(name, *v) for name, v in a.variants.items()]
    out = []
    for name, what, flags in rows:
        for seed in a.seeds:
            leaf = name if len(a.seeds) == 1 else f"{name}_seed{seed}"
            out.append((name, what, flags, seed, os.path.join(a.out, "runs", leaf)))
    # a scored run is named by its directory's name alone: the table must not hold a path of this machine
    for name, _, run_dir in (item.partition("=") for item in a.score_runs):
        out.append((name, f"scored run {os.path.basename(os.path.normpath(run_dir))}", None, a.seeds[0], run_dir))
    return out


def main(argv=None):
    a = parse(argv)
    prepare_out(a)
    if a.threads:
        os.environ["OMP_NUM_THREADS"] = str(a.threads)  # the training and scoring subprocesses inherit it
    ensure_centers(a)
    a.seed = a.seeds[0]
    floor = real_data_floor(a)
    with ThreadPoolExecutor(a.jobs) as pool:
        rows = list(pool.map(lambda job: run_job(a, job), jobs(a)))
    info = {"minutes_each": a.minutes, "n_fresh": a.n_fresh, "long_factor": a.long_factor, "floor": floor,
            "seeds": a.seeds, "jobs": a.jobs, "threads": a.threads, "train_args": a.train_args,
            "torch": torch.__version__, "rows": rows}
    with open(os.path.join(a.out, "quality.json"), "w") as fh:
        json.dump(info, fh, indent=2)
    table = markdown(a, rows, floor)
    with open(os.path.join(a.out, "quality.md"), "w") as fh:
        fh.write(table)
    figure(rows, floor, os.path.join(a.out, "real_test_images.png"), os.path.join(a.out, "quality.png"))
    print(table)
    print(f"wrote {a.out}/quality.md, quality.json, quality.png")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
