"""Precision ablation: M-JEM trained under each precision policy (utils/precision.py) on each network, at equal
wall-clock and at equal iterations, several seeds, scored under bench/quality.py's protocol.

Policies: fp32 (as published), bf16_loss (bf16 loss, fp32 chains: the --amp on default), bf16_all (the chains in
bf16 too). Equal wall-clock: every run trains --minutes. Equal iterations: each bf16 run trains as many iterations
as the fp32 run of its network and seed made in --minutes.

    python bench/precision.py --nets 1 4 --seeds 1 2 --minutes 2 --out bench/results/precision   # README's table
Writes <out>/precision.md (mean and spread over seeds), precision.json (every run) and precision.png; runs run
--jobs at a time, each with --threads threads (so every run of a table sees the same machine share).
"""
from concurrent.futures import ThreadPoolExecutor
import copy
import importlib.util
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from utils.errors import ArgumentParser, UserError, fid_images, nonneg_int, positive_float, positive_int, run_cli  # noqa: E402

_spec = importlib.util.spec_from_file_location("quality_bench", os.path.join(ROOT, "bench", "quality.py"))
quality = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(quality)

POLICIES = {"fp32": [], "bf16_loss": ["--amp", "on", "--channels_last", "on"],
            "bf16_all": ["--amp", "on", "--amp_sampler", "on", "--channels_last", "on"]}


def parse(argv):
    p = ArgumentParser("bench/precision.py", description=__doc__.split("\n")[0],
                       example="python bench/precision.py --nets 1 --seeds 1 2 --minutes 2")
    p.add_argument("--nets", nargs="+", type=positive_int, default=[1, 4],
                   help="widths of the small CNN (1: the quickstart's; 4: wide enough for AMX to pay)")
    p.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    p.add_argument("--seeds", nargs="+", type=nonneg_int, default=[1, 2])
    p.add_argument("--minutes", type=positive_float, default=2.0, help="wall-clock budget of the equal-time runs")
    p.add_argument("--n_fresh", type=fid_images, default=500, help="new chains scored per run and chain length")
    p.add_argument("--long_factor", type=positive_int, default=10)
    p.add_argument("--buffer_ratio", type=positive_float, default=0.05, help="buffer images scored per class")
    p.add_argument("--fid_ref_n", type=fid_images, default=2000)
    p.add_argument("--inception_precision", default="bf16", choices=["exact", "bf16", "tf32"])
    p.add_argument("--train_args", default="", help="extra flags for every training run")
    p.add_argument("--data_root", default="./data")
    p.add_argument("--center_dir", default="./data/centers")
    p.add_argument("--n_valid", type=positive_int, default=5000)
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    p.add_argument("--jobs", type=positive_int, default=2, help="runs at a time")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads of each run")
    p.add_argument("--out", default="bench/results/precision")
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    if "fp32" not in a.policies:
        raise UserError("--policies: fp32 is the reference of every comparison; include it")
    if a.buffer_ratio >= 1:
        raise UserError(f"--buffer_ratio: expected a fraction in (0, 1), got {a.buffer_ratio}")
    a.seed, a.recipes = a.seeds[0], []  # what quality's helpers read
    return a


def run_one(a, net, policy, seed, iterations=None):
    """Train one M-JEM run (for --minutes, or for `iterations` with no time limit) and score it."""
    name = f"w{net}_{policy}_s{seed}" + ("_iters" if iterations else "")
    b = copy.copy(a)
    b.seed, b.out = seed, a.out
    b.minutes = a.minutes if iterations is None else 10000.0
    b.train_args = " ".join(["--width", str(net), *POLICIES[policy], a.train_args] +
                            ([f"--max_iters {iterations}"] if iterations else []))
    run_dir = os.path.join(a.out, "runs", name)
    quality.train(b, name, run_dir, quality.MAJEM)
    row = quality.score_run(b, run_dir)
    row.update(net=net, policy=policy, seed=seed, budget="iterations" if iterations else "wall-clock",
               iters_per_s=row["iterations"] / (60 * row["train_minutes"]))
    print(json.dumps({k: v for k, v in row.items() if k != "run_dir"}), flush=True)
    return row


def spread(values):
    """'mean (min-max)' of the seeds' values."""
    return quality.spread(values, "{:.3f}" if max(values) < 1 else "{:.1f}")


def table(a, rows, floor):
    lines = [f"M-JEM (`{' '.join(quality.MAJEM)}`) on Fashion-MNIST, small CNN of the given width, seeds "
             f"{', '.join(map(str, a.seeds))}: mean (min-max). Equal wall-clock: {a.minutes:g} min each, {a.threads} "
             f"thread(s) per run, {a.jobs} at a time; equal iterations: the fp32 run's count. FID/KID: "
             f"{floor['convention']}, Inception {floor['precision']}, reference {floor['reference']}; buffer: top "
             f"{a.buffer_ratio:g} per predicted class; new chains: {a.n_fresh}, K and {a.long_factor}x K steps. "
             f"Real-data floor: {floor['n']} test images, FID {floor['fid']:.1f}.", "",
             "| width | policy | budget | iterations | iterations/s | test acc | buffer FID | buffer KID | "
             f"new chains FID (K) | FID ({a.long_factor}x K) |", "|" + "---|" * 10]
    for net in a.nets:
        for budget in ("wall-clock", "iterations"):
            for policy in a.policies:
                rs = [r for r in rows if (r["net"], r["policy"], r["budget"]) == (net, policy, budget)]
                if not rs:
                    continue
                lines.append(
                    f"| {net} | {policy} | {budget} | {spread([r['iterations'] for r in rs])} | "
                    f"{spread([r['iters_per_s'] for r in rs])} | {spread([100 * r['test_acc'] for r in rs])}% | "
                    f"{spread([r['buffer']['fid'] for r in rs])} | {spread([r['buffer']['kid'] for r in rs])} | "
                    f"{spread([r['fresh']['fid'] for r in rs])} | {spread([r['long']['fid'] for r in rs])} |")
    return "\n".join(lines) + "\n"


def figure(a, rows, path):
    """Per width, buffer and new-chain FID of every run against its iterations, one colour per policy."""
    fig, axes = plt.subplots(1, len(a.nets), figsize=(5.5 * len(a.nets), 4), squeeze=False)
    colours = dict(zip(POLICIES, ("tab:blue", "tab:orange", "tab:red")))
    for ax, net in zip(axes[0], a.nets):
        for r in (r for r in rows if r["net"] == net):
            marker = "o" if r["budget"] == "wall-clock" else "s"
            ax.scatter(r["iterations"], r["buffer"]["fid"], c=colours[r["policy"]], marker=marker)
            ax.scatter(r["iterations"], r["fresh"]["fid"], c=colours[r["policy"]], marker=marker, alpha=0.35)
        for policy in a.policies:
            ax.scatter([], [], c=colours[policy], label=policy)
        ax.set_title(f"width {net}: FID (solid: buffer, faint: new chains; o time, s iterations)", fontsize=8)
        ax.set_xlabel("training iterations")
        ax.set_ylabel("FID")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    a = parse(argv)
    quality.prepare_out(a)
    quality.ensure_centers(a)
    os.environ["OMP_NUM_THREADS"] = str(a.threads)  # the training and scoring subprocesses inherit it
    floor = quality.real_data_floor(a)
    with ThreadPoolExecutor(a.jobs) as pool:
        timed = list(pool.map(lambda job: run_one(a, *job),
                              [(net, policy, seed) for net in a.nets for policy in a.policies for seed in a.seeds]))
        fp32 = {(r["net"], r["seed"]): r["iterations"] for r in timed if r["policy"] == "fp32"}
        counted = list(pool.map(lambda job: run_one(a, *job),
                                [(net, policy, seed, fp32[net, seed]) for net in a.nets for policy in a.policies
                                 for seed in a.seeds if policy != "fp32"]))
    rows = timed + counted
    info = {"minutes": a.minutes, "seeds": a.seeds, "threads": a.threads, "jobs": a.jobs, "floor": floor, "rows": rows}
    with open(os.path.join(a.out, "precision.json"), "w") as fh:
        json.dump(info, fh, indent=2)
    text = table(a, rows, floor)
    with open(os.path.join(a.out, "precision.md"), "w") as fh:
        fh.write(text)
    figure(a, rows, os.path.join(a.out, "precision.png"))
    print(text)
    print(f"wrote {a.out}/precision.md, precision.json, precision.png")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
