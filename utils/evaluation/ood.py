"""Out-of-distribution modes: AUROC of score functions against OOD sets, and log p(x) histograms."""
import os

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

from utils.data import dataset_info
from utils.errors import UserError
from utils.evaluation.context import eval_split
from utils.metrics import aupr, auroc, fpr_at_95_tpr, roc
from utils.plotting import pyplot
from utils.progress import progress

SYNTHETIC_OOD = ("uniform", "constant", "blur")
UPSTREAM_OOD = {"svhn": "svhn", "cifar_100": "cifar100", "celeba": "celeba", "cifar_interp": "interp"}


def default_ood(ev):
    """--ood, else upstream's --ood_dataset (svhn for CIFAR-10, upstream's default), else offline pairs."""
    if ev.args.ood:
        return ev.args.ood
    if ev.args.ood_dataset:
        return [UPSTREAM_OOD[ev.args.ood_dataset]]
    pairs = {"fashionmnist": ["mnist"], "mnist": ["fashionmnist"], "cifar10": ["svhn"], "cifar100": ["svhn", "cifar10"],
             "svhn": ["cifar10"]}
    return pairs.get(ev.arch["dataset"], []) + ([] if ev.arch["dataset"] == "cifar10" else list(SYNTHETIC_OOD))


def ood_sets(ev, data, names):
    """{name: images} for the named OOD sets (with --sigma noise); a missing default dataset is skipped with a note."""
    n, g = len(data), torch.Generator().manual_seed(ev.args.seed)
    sets, notes = {}, {}
    for name in names:
        if name == "uniform":
            sets[name] = torch.rand(n, *ev.image_shape, generator=g) * 2 - 1
        elif name == "constant":
            sets[name] = (torch.rand(n, 1, 1, 1, generator=g) * 2 - 1).expand(n, *ev.image_shape).clone()
        elif name == "blur":
            sets[name] = TF.gaussian_blur(data, kernel_size=5, sigma=1.5)
        elif name == "interp":  # upstream's cifar_interp: the mean of two test images plus --sigma noise
            sets[name] = ev.noisy((data + data[torch.randperm(n, generator=g)]) / 2)
        else:
            dataset, train = eval_split(name)
            ch, size, _ = dataset_info(dataset)
            try:
                x, _ = ev.images(ev.dataset(dataset, train), ev.args.n_points, seed=ev.args.seed + 1)
            except UserError as e:
                if ev.args.ood or ev.args.ood_dataset or ev.args.datasets:
                    raise
                notes[name] = f"skipped: {e}"
                continue
            if size != ev.image_shape[-1]:
                x = F.interpolate(x, size=ev.image_shape[-2:], mode="bilinear", align_corners=False)
            if ch != ev.image_shape[0]:
                x = x.mean(1, keepdim=True) if ev.image_shape[0] == 1 else x.expand(-1, ev.image_shape[0], -1, -1)
            sets[name] = ev.noisy(x)
    return sets, notes


def score_sets(ev, sets):
    scores = {}
    for name, x in progress(sets.items(), desc="OOD: scoring sets", unit="set"):
        f, probs = ev.forward(x)
        s = {}
        for fn in ev.args.scores or [ev.args.score_fn]:
            s[fn] = {"px": lambda: f, "py": lambda: probs.max(1).values, "pxgrad": lambda: -ev.grad_norm(x)}[fn]()
        scores[name] = s
    return scores


def plot_roc(scores, sets, path):
    """One panel per score function, one ROC curve per OOD set."""
    plt = pyplot()
    names = list(scores["in"])
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4.5), squeeze=False)
    for ax, k in zip(axes[0], names):
        for name in sets:
            fpr, tpr = roc(scores["in"][k], scores[name][k])
            ax.plot(fpr, tpr, label=f"{name} (AUROC {auroc(scores['in'][k], scores[name][k]):.3f})")
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_title(f"score {k}")
        ax.set_xlabel("false-positive rate (OOD accepted)")
        ax.set_ylabel("true-positive rate (in-distribution kept)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def mode_ood(ev, out):
    """AUROC, AUPR (in-distribution positive) and FPR at 95% TPR per score function and OOD set; roc.png."""
    data, _ = ev.test_images(ev.args.n_points, seed=ev.args.seed)
    sets, notes = ood_sets(ev, data, default_ood(ev))
    scores = score_sets(ev, {"in": data, **sets})
    metrics = {"auroc": auroc, "aupr": aupr, "fpr95": fpr_at_95_tpr}
    tables = {k: {name: {m: fn(scores["in"][k], scores[name][k]) for m, fn in metrics.items()} for name in sets}
              for k in scores["in"]}
    if sets:
        plot_roc(scores, sets, os.path.join(out, "roc.png"))
    return {"in_distribution": ev.arch["dataset"], "n": len(data), "tables": tables, "notes": notes,
            "auroc": {name: {k: tables[k][name]["auroc"] for k in tables} for name in sets},
            "scores": {"px": "f(x) = -E(x)", "py": "max softmax", "pxgrad": "-||grad_x f(x)||"},
            "figures": ["roc.png"] if sets else []}


def mode_logp_hist(ev, out):
    plt = pyplot()
    data, _ = ev.test_images(ev.args.n_points, seed=ev.args.seed)
    if ev.args.datasets:
        named, notes = ood_sets(ev, data, ev.args.datasets)
    else:
        sets, notes = ood_sets(ev, data, default_ood(ev))
        named = {ev.arch["dataset"]: data, **sets}
    fig, ax = plt.subplots(figsize=(7, 5))
    means = {}
    for name, x in named.items():
        f = ev.forward(x)[0].numpy()
        means[name] = float(f.mean())
        ax.hist(f, bins=50, alpha=0.5, density=True, label=name)
    ax.set_xlabel("f(x) = -E(x) (unnormalised log p(x))")
    ax.legend()
    fig.savefig(os.path.join(out, "logp_hist.png"), dpi=120, bbox_inches="tight")
    plt.close(fig)
    return {"mean_f": means, "notes": notes, "figures": ["logp_hist.png"]}

