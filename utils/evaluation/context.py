"""What every evaluation mode shares: the checkpoint (this tool's or upstream's), the model, data, chain
starts and sampling procedures, Inception."""
import contextlib
import os
from types import SimpleNamespace

import torch

from models import build_model, load_weights, recorded_arch
from models.activations import PUBLISHED_ACT
from models.energy import class_conditional
from utils.data import DATASETS, dataset_info, image_transform, load_dataset
from utils.errors import UserError
from utils.fid import FidScorer
from utils.precision import recorded_policy
from utils.progress import progress
from utils.run_dir import save_grid
from utils.sampling.frozen import frozen_model_state
from utils.sampling.samplers import ANNEAL_FACTOR, chains_in_train_mode, run_sampler
from utils.sampling.sgld import sgld_sample
from utils.sampling.starts import make_start_fn
from utils.training.chain_free import CHAIN_FREE_OBJECTIVES
from utils.training.objectives import CONDITIONAL_OBJECTIVES, has_generative_term
from utils.upstream import adopt_upstream_checkpoint, upstream_architecture

# upstream's --dataset / --datasets / --ood_dataset names -> (dataset, training split)
UPSTREAM_SETS = {"cifar_test": ("cifar10", False), "cifar_train": ("cifar10", True), "svhn_test": ("svhn", False),
                 "svhn_train": ("svhn", True), "cifar100_test": ("cifar100", False),
                 "cifar100_train": ("cifar100", True), "cifar10": ("cifar10", False), "svhn": ("svhn", False),
                 "cifar100": ("cifar100", False), "cifar_100": ("cifar100", False), "celeba": ("celeba", False)}
UPSTREAM_INIT = {"i": "gm", "r": "u"}  # upstream eval's --init: i(nform) / r(andom)
# upstream eval's model flags, which describe an upstream checkpoint
UPSTREAM_MODEL_DEFAULTS = {"model": "wrn", "depth": 28, "width": 10, "norm": "batch"}


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
    """The training flags an upstream checkpoint does not record: upstream's defaults (eval's --sgld_lr, --init, ...
    override them)."""
    return {"dataset": dataset, "data_root": "./data", "init": "gm", "center_dir": ".", "sgld_lr": 1.0,
            "sgld_std": 0.0, "sampler": "sgld", "pyx": 1.0, "dropout_rate": 0.0, "n_leapfrog": 10}


def checkpoint_model(args, ckpt, path):
    """(arch, training flags) of a checkpoint; an upstream one takes them from the eval flags."""
    if not ckpt.get("upstream"):
        if not ckpt.get("arch"):
            raise UserError(f"checkpoint {path} has no architecture record")
        arch = recorded_arch(ckpt["arch"])
        given = {k: getattr(args, k) for k in UPSTREAM_MODEL_DEFAULTS if getattr(args, k) is not None}
        if args.uncond:
            given["uncond"] = True
        diff = [f"--{k} {v} vs {arch[k]!r} in the checkpoint" for k, v in given.items() if arch[k] != v]
        if diff:
            raise UserError(f"checkpoint {path} does not match the flags: " + "; ".join(diff))
        return arch, ckpt["args"]
    dataset = eval_split(args.dataset or "cifar_test")[0]
    depth, width, in_channels, n_classes, _ = upstream_architecture(ckpt["model_state_dict"])
    _, size, _ = dataset_info(dataset)
    arch = {"dataset": dataset, "model": args.model or "wrn", "depth": args.depth or depth, "width": args.width or width,
            "norm": args.norm or UPSTREAM_MODEL_DEFAULTS["norm"], "act": PUBLISHED_ACT["wrn"], "uncond": args.uncond,
            "spectral_norm": False,
            "in_channels": in_channels, "image_size": size, "n_classes": n_classes}
    return arch, upstream_train_args(dataset)


def chosen_weights(ckpt, weights, path):
    """"ema" or "online": --weights auto takes the --ema average when the checkpoint has one."""
    has_ema = ckpt.get("ema_state_dict") is not None
    if weights == "ema" and not has_ema:
        raise UserError(f"--weights ema: checkpoint {path} holds no average (trained without --ema)")
    return "ema" if weights == "ema" or (weights == "auto" and has_ema) else "online"


def chain_weights(ckpt, weights, train_args, path):
    """"ema" or "online" for chains sampled as the run trained them: --weights auto takes the weights its training
    chains sampled (the --ema average with --ema_chains, else the online weights); ema / online as given."""
    if weights != "auto":
        return chosen_weights(ckpt, weights, path)
    return "ema" if train_args.get("ema_chains") and ckpt.get("ema_state_dict") is not None else "online"


def load_model(ckpt, arch, train_args, path, device, weights="auto"):
    """The checkpoint's model in eval mode, with its online weights or its --ema average (see chosen_weights)."""
    if ckpt.get("upstream"):
        ckpt.update(adopt_upstream_checkpoint(ckpt, arch, path))
    key = "ema_state_dict" if chosen_weights(ckpt, weights, path) == "ema" else "model_state_dict"
    model = build_model(arch["model"], arch["n_classes"], arch["in_channels"], arch["depth"], arch["width"],
                        arch["norm"], train_args.get("dropout_rate", 0.0), arch["uncond"], arch["image_size"],
                        arch.get("spectral_norm", False), log_normaliser="log_z" in ckpt[key], act=arch["act"])
    load_weights(model, ckpt[key], path)
    return model.to(device).eval()


def chain_steps_as_trained(train_args, iterations, world=1):
    """Steps a training chain had run when the loss saw it, on average: K for short-run chains; with a replay buffer,
    K times the mean draws since its start (1 / reinit_freq), at most the draws per buffer entry the run made (each
    of `world` processes draws --batch_size chains an iteration from its 1/world share of the buffer)."""
    k = train_args.get("n_steps", 100)
    if train_args.get("short_run") or "buffer_size" not in train_args or \
            train_args.get("objective") in CHAIN_FREE_OBJECTIVES:
        return k
    draws = iterations * world * train_args["batch_size"] / train_args["buffer_size"]
    rho = train_args.get("reinit_freq", 0.0)
    return max(k, round(k * (min(1 / rho, draws) if rho > 0 else draws)))


@contextlib.contextmanager
def upstream_train_mode(model):
    """Upstream's sampling: train mode, BatchNorm's running statistics updated by the chains; eval mode after."""
    model.train()
    try:
        yield model
    finally:
        model.eval()


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
        self.anneal_factor = getattr(args, "anneal_factor", None) or self.train_args.get("anneal_factor", ANNEAL_FACTOR)
        self.time_cutoff = self.train_args.get("time_cutoff", 1.0)
        override = getattr(args, "sampler_precision", "as_trained")
        self.precision = recorded_policy(self.train_args, device, None if override == "as_trained" else override)
        if self.precision.channels_last and model is not None:
            model.to(memory_format=torch.channels_last)
        if args.n_sample_steps is None:
            args.n_sample_steps = 100 if args.variant == "upstream" else \
                chain_steps_as_trained(self.train_args, ckpt.get("iteration") or 0, len(ckpt.get("rng") or [None]))
        self._fid = self._chain_model = None

    def dataset(self, name=None, train=False):
        return load_dataset(name or self.arch["dataset"], self.data_root, train,
                            image_transform(name or self.arch["dataset"], False), self.args.download)

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

    def chain_model(self):
        """The weights training's chains sampled (chain_weights), in the model's layout; loaded once."""
        if self._chain_model is None:
            which = chain_weights(self.ckpt, self.args.weights, self.train_args, self.args.load_path)
            self._chain_model = self.model
            if which != chosen_weights(self.ckpt, self.args.weights, self.args.load_path):
                self._chain_model = load_model(self.ckpt, self.arch, self.train_args, self.args.load_path,
                                               self.device, which)
                if self.precision.channels_last:
                    self._chain_model.to(memory_format=torch.channels_last)
        return self._chain_model

    def chains_as_trained(self):
        """The chains' model in the mode training ran its chains in (samplers.chains_in_train_mode: train mode for
        upstream's p(x) runs, eval mode for JEM's sampler, --ema_chains and classifier-only runs); its state comes
        out unchanged."""
        t = self.train_args
        generative = t.get("px", 1.0) > 0 and has_generative_term(t.get("objective", "maebm"))
        return frozen_model_state(self.chain_model(), train=chains_in_train_mode(
            t.get("sampler", "sgld"), generative, t.get("ema_chains", False)))

    def chain_labels(self, n):
        """Balanced classes for n new chains where training drew its chains given labels (j_ebm, gcl,
        --class_cond_p_x_sample), else None."""
        t = self.train_args
        if t.get("objective") in CONDITIONAL_OBJECTIVES or t.get("class_cond_p_x_sample"):
            return torch.arange(n) % self.arch["n_classes"]
        return None

    def class_agreement(self, x, y):
        """Fraction of samples that the classifier (eval mode) assigns to the class they were drawn given."""
        return float((self.forward(x)[1].argmax(1) == y).float().mean())

    def sample(self, n, n_steps, y=None, snapshots=None, joint=False):
        """n new chains of n_steps steps of the checkpoint's sampler, the model as training ran its chains (given
        classes y if set; `joint`: on log p(x, y), see class_conditional); `snapshots` collects the first 10 chains."""
        with self.chains_as_trained() as model:
            return self._sample(n, n_steps, y, snapshots, class_conditional(model) if joint else model)

    def _sample(self, n, n_steps, y, snapshots, model):
        start, bs, out = self.start_fn(), self.args.batch_size, []
        for i in progress(range(0, n, bs), desc=f"{self.args.eval}: {n} chains of {n_steps} steps", unit="batch"):
            yb = y[i:i + bs].to(self.device) if y is not None else None
            x = self.precision.layout(start(min(bs, n - i), yb))
            record = snapshots is not None and i == 0
            every = self.args.snapshot_every if record else n_steps
            if record:
                snapshots.append(x[:10].cpu())
            for done in range(0, n_steps, every):
                with self.precision.sampler_autocast():
                    x, _ = run_sampler(self.sampler, model, x, min(every, n_steps - done), self.sgld_lr,
                                       self.sgld_std, y=yb, n_leapfrog=self.train_args.get("n_leapfrog", 10),
                                       anneal_factor=self.anneal_factor, window=(done, n_steps),
                                       time_cutoff=self.time_cutoff)
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
            with self.precision.sampler_autocast():
                x, _ = run_sampler(self.sampler, self.model, self.precision.layout(xb), self.args.n_steps,
                                   self.sgld_lr, self.sgld_std, n_leapfrog=self.train_args.get("n_leapfrog", 10),
                                   anneal_factor=self.anneal_factor, time_cutoff=self.time_cutoff)
            return x.cpu()
        return self.batched(upstream if self.args.variant == "upstream" else project, x)

    def persistent_chains(self, out=None):
        """Upstream's new_samples: --buffer_size (else --n_samples) starts; each of --n_sample_steps rounds takes
        --batch_size of them (restarting --reinit_freq), runs --n_steps SGLD steps (unclamped gradient, model in
        train mode; upstream's variant lets BatchNorm's running statistics move, the project variant restores the
        model's state afterwards) and writes them back; a grid samples_<round>.png every --print_every rounds.
        Returns (chains, SGLD steps each chain ran)."""
        a = self.args
        if a.n_steps == 0:
            raise UserError(f"--n_steps: --eval {a.eval} runs --n_steps SGLD steps per round; give at least 1 "
                            "(upstream's command uses --n_steps 1)")
        start = self.start_fn()
        n = a.buffer_size or a.n_samples
        buffer = start(n)
        steps = torch.zeros(n, dtype=torch.long, device=buffer.device)
        bs = min(a.batch_size, n)
        with frozen_model_state(self.model) if a.variant == "project" else upstream_train_mode(self.model):
            self._run_persistent_chains(start, buffer, steps, bs, out)
        return buffer.cpu(), steps.cpu()

    def _run_persistent_chains(self, start, buffer, steps, bs, out):
        a, n = self.args, len(buffer)
        for i in progress(range(a.n_sample_steps), desc=f"{a.eval}: rounds of {a.n_steps} steps on {bs} of {n} chains"):
            idx = torch.randperm(n, device=buffer.device)[:bs] if n > bs else torch.arange(n, device=buffer.device)
            x0 = buffer[idx]
            fresh = torch.rand(bs, device=buffer.device) < a.reinit_freq
            x0 = self.precision.layout(torch.where(fresh.view(-1, 1, 1, 1), start(bs), x0))
            with self.precision.sampler_autocast():
                buffer[idx] = sgld_sample(self.model, x0, a.n_steps, self.sgld_lr, self.sgld_std,
                                          grad_clip=float("inf"))
            steps[idx] = torch.where(fresh, 0, steps[idx]) + a.n_steps
            if out is not None and (i + 1) % a.print_every == 0:
                save_grid(buffer[idx], os.path.join(out, f"samples_{i + 1}.png"))

    def batch_statistics_features(self, x):
        """(f(x), features) with BatchNorm on batch statistics, the model's state unchanged (upstream's t-SNE)."""
        with frozen_model_state(self.model), torch.no_grad():
            return self.batched(lambda xb: (self.model(xb)[0].cpu(), self.model.f(xb).cpu()), x, bs=100)

    def fid_scorer(self):
        if self._fid is None:
            cache_dir = self.args.fid_stats_dir or os.path.join(self.data_root, "fid_stats")
            self._fid = FidScorer(self.dataset(train=True), cache_dir, self.arch["dataset"], self.device,
                                  self.args.batch_size, self.args.fid_ref_n, self.args.seed, self.args.inception_weights,
                                  self.args.inception_precision)
        return self._fid

    def generative_scores(self, samples, classes=None):
        """FID, KID and (where real logits weights exist) IS of samples in [-1,1] against the training set; per class
        too, given a class per sample."""
        return self.fid_scorer().score(samples, classes)
