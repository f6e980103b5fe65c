"""Completing and denoising test images: the EBM's chains beside the fitted Gaussian's exact conditional and
posterior (the best linear estimator), per mask and per noise level."""
import os
from types import SimpleNamespace

import torch

from models.energy import class_conditional
from utils.errors import UserError
from utils.fid import FidScorer
from utils.gaussian import fit_size, load_gaussian_start
from utils.gaussian_posterior import condition_on_pixels, denoising_posterior
from utils.progress import progress
from utils.run_dir import save_grid
from utils.sampling.samplers import run_sampler

MASKS = ("centre", "left", "right", "bottom", "random50", "random90")


def missing_pixels(name, n, shape, seed):
    """(n, C, H, W) bool, True where a pixel is to be completed: a centre square of half the side, the left, right or
    bottom half, or each pixel with probability 0.5 / 0.9 (per image, the same in every channel)."""
    c, h, w = shape
    free = torch.zeros(n, 1, h, w, dtype=torch.bool)
    if name == "centre":
        free[..., h // 4:h // 4 + h // 2, w // 4:w // 4 + w // 2] = True
    elif name == "left":
        free[..., :, :w // 2] = True
    elif name == "right":
        free[..., :, w // 2:] = True
    elif name == "bottom":
        free[..., h // 2:, :] = True
    elif name in ("random50", "random90"):
        p = int(name.removeprefix("random")) / 100
        free = torch.rand(n, 1, h, w, generator=torch.Generator().manual_seed(seed)) < p
    else:
        raise UserError(f"--masks: unknown mask {name!r}; expected some of {', '.join(MASKS)}")
    return free.expand(n, c, h, w).clone()


def fitted_gaussians(ev):
    """[(mean, cov)] in float64 of the Gaussians the run started its chains from: one per class for --init gm_class,
    else the one over all images."""
    size = ev.image_shape[-1]
    if fit_size(size) != size:
        raise UserError(f"--eval {ev.args.eval}: the Gaussian is fitted at {fit_size(size)}px, the images have "
                        f"{size}px; restoration needs them equal (images of at most 32px)")
    per_class = ev.train_args.get("init") == "gm_class"
    start = load_gaussian_start(ev.args.center_dir or ev.train_args["center_dir"], ev.arch["dataset"],
                                ev.image_shape, per_class)
    means = start.mean.double().reshape(-1, start.mean.shape[-1])
    factors = start.scale_tril.double().reshape(-1, *start.scale_tril.shape[-2:])
    return [(m, f @ f.T) for m, f in zip(means, factors)], factors


def gaussian_estimates(gaussians, factors, solve, x, y, n_draws, given_label, generator):
    """(mean, draws (N x n_draws x d)) of the Gaussian answer: `solve(mean, cov, draw)` -> (mean, log density of the
    evidence, samples); one Gaussian, the true class's (`given_label`), or the mixture of the classes, whose
    weights are the classes' posterior probabilities given the evidence."""
    n, d = x.shape
    results = []
    for (mean, cov), factor in zip(gaussians, factors):
        joint = mean + torch.randn(n, n_draws, d, dtype=torch.float64, generator=generator) @ factor.T
        results.append(solve(mean, cov, joint))
    means, logliks, draws = (torch.stack(r) for r in zip(*results))  # classes first
    if len(gaussians) == 1:
        return means[0], draws[0]
    if given_label:
        pick = y.long()
        rows = torch.arange(n)
        return means[pick, rows], draws[pick, rows]
    weights = torch.softmax(logliks, 0)  # equal priors: the classes' posterior given the evidence
    chosen = torch.multinomial(weights.T, n_draws, replacement=True, generator=generator)  # N x n_draws
    rows = torch.arange(n)[:, None]
    return (weights[..., None] * means).sum(0), draws[chosen, rows, torch.arange(n_draws)[None]]


def chains(ev, energy_of, x0, y, n_steps, desc, step_size=None):
    """The run's sampler (and step size unless given) on `energy_of(model, batch slice)`, the model as training ran
    its chains, batch by batch."""
    out, bs = [], ev.args.batch_size
    with ev.chains_as_trained() as model:
        joint = class_conditional(model) if y is not None else model
        for i in progress(range(0, len(x0), bs), desc=desc, unit="batch"):
            part = slice(i, i + bs)
            yb = y[part].to(ev.device) if y is not None else None
            with ev.precision.sampler_autocast():
                x, _ = run_sampler(ev.sampler, energy_of(joint, part), ev.precision.layout(x0[part].to(ev.device)),
                                   n_steps, step_size or ev.sgld_lr, ev.sgld_std, y=yb,
                                   n_leapfrog=ev.train_args.get("n_leapfrog", 10), anneal_factor=ev.anneal_factor,
                                   time_cutoff=ev.time_cutoff)
            out.append(x.float().cpu())
    return torch.cat(out)


def pinned_energy(model, known, kept):
    """The model's energy with the `known` pixels held at `kept`: the chains' gradient is zero there, and whatever the
    sampler's noise does to them, the energy reads the given values."""
    def energy(z, y=None):
        return model(torch.where(known.to(z.device), kept.to(z.device, z.dtype), z), y)
    return energy


def errors(estimate, truth, where):
    """MSE over the `where` pixels and PSNR (images in [-1, 1]: a range of 2), each the mean over images."""
    sq = ((estimate - truth) ** 2 * where).flatten(1).sum(1) / where.flatten(1).sum(1).clamp(min=1)
    return {"mse": float(sq.mean()), "psnr": float((10 * torch.log10(4 / sq.clamp(min=1e-12))).mean())}


class Scorer:
    """Accuracy of the classifier on restored images and their FID against the test split."""

    def __init__(self, ev, out):
        self.ev, self.classify = ev, ev.train_args.get("pyx", 0) > 0
        self.fid = None if ev.args.no_fid else FidScorer(
            ev.dataset(), os.path.join(ev.data_root, "fid_stats"), ev.arch["dataset"], ev.device, 100,
            ev.args.fid_ref_n, ev.args.seed, ev.args.inception_weights, ev.args.inception_precision, split="test")

    def __call__(self, images, truth, labels, where):
        row = errors(images, truth, where)
        if self.classify:
            row["accuracy"] = float((self.ev.forward(images)[1].argmax(1) == labels).float().mean())
        if self.fid is not None:
            row["fid"] = self.fid.score(images)["fid"]
        return row


def as_images(flat, truth):
    return flat.float().reshape(truth.shape).clamp(-1, 1)


def gaussian_rows(scorer, truth, labels, where, gauss_mean, gauss_draws):
    """The Gaussian's rows: its mean, one of its samples, and the errors of the mean of its draws."""
    return {"gaussian_mean": scorer(as_images(gauss_mean, truth), truth, labels, where),
            "gaussian_sample": scorer(as_images(gauss_draws[:, 0], truth), truth, labels, where),
            "gaussian_mean_of_draws": errors(as_images(gauss_draws.mean(1), truth), truth, where)}


def ebm_rows(scorer, truth, labels, where, ebm_draws, tag=""):
    """The EBM's rows: one sample, and the errors of the mean of its draws (a mean is not an image of the data)."""
    return {f"ebm_sample{tag}": scorer(ebm_draws[0], truth, labels, where),
            f"ebm_mean_of_draws{tag}": errors(ebm_draws.mean(0), truth, where)}


def test_set(ev):
    x, y = ev.images(ev.dataset(), ev.args.n_points or 500, ev.args.seed)
    if len(x) < 2:
        raise UserError(f"--n_points: {len(x)} test image(s); restoration scores need at least 2")
    return x, y


def restoration_job(ev, out):
    """What both modes share: the fitted Gaussians, the test images, the chains' length, the seeded generator, the
    labels the chains are given (or None), the scorer, and the result's header."""
    args = ev.args
    gaussians, factors = fitted_gaussians(ev)
    truth, labels = test_set(ev)
    job = SimpleNamespace(gaussians=gaussians, factors=factors, truth=truth, labels=labels, n=len(truth),
                          shape=truth.shape[1:], steps=args.n_steps or ev.train_args["n_steps"],
                          g=torch.Generator().manual_seed(args.seed), y=labels if args.given_label else None)
    header = {"n_images": job.n, "n_draws": args.n_draws, "n_steps": job.steps, "sampler": ev.sampler,
              "given_label": args.given_label, "gaussians": len(gaussians)}
    job.scorer = Scorer(ev, out)
    return job, header


def mode_inpaint(ev, out):
    args = ev.args
    job, result = restoration_job(ev, out)
    gaussians, factors, truth, labels, n, shape, steps, g, y, scorer = (
        job.gaussians, job.factors, job.truth, job.labels, job.n, job.shape, job.steps, job.g, job.y, job.scorer)
    result["masks"] = {}
    for name in args.masks:
        free = missing_pixels(name, n, shape, args.seed)
        flat_known = ~free.flatten(1)
        solve = lambda mean, cov, joint: condition_on_pixels(mean, cov, flat_known, truth.flatten(1), joint)[:3]
        gauss_mean, gauss_draws = gaussian_estimates(gaussians, factors, solve, truth.flatten(1), labels,
                                                     args.n_draws, args.given_label, g)
        starts = gauss_draws.transpose(0, 1).float().reshape(args.n_draws * n, *shape).clamp(-1, 1)
        known = (~free).repeat(args.n_draws, 1, 1, 1)
        kept = truth.repeat(args.n_draws, 1, 1, 1)
        pinned = lambda model, part: pinned_energy(model, known[part], kept[part])
        ebm = chains(ev, pinned, starts, None if y is None else y.repeat(args.n_draws), steps, f"inpaint {name}")
        ebm = torch.where(known, kept, ebm).reshape(args.n_draws, n, *shape)  # the known pixels exactly as given
        result["masks"][name] = {"missing_fraction": float(free.float().mean()),
                                 **gaussian_rows(scorer, truth, labels, free, gauss_mean, gauss_draws),
                                 **ebm_rows(scorer, truth, labels, free, ebm)}
        corrupted = torch.where(free, torch.zeros_like(truth), truth)
        grid(out, f"inpaint_{name}.png", corrupted, as_images(gauss_mean, truth), ebm, truth)
    return result


def mode_denoise(ev, out):
    args = ev.args
    job, result = restoration_job(ev, out)
    gaussians, factors, truth, labels, n, shape, steps, g, y, scorer = (
        job.gaussians, job.factors, job.truth, job.labels, job.n, job.shape, job.steps, job.g, job.y, job.scorer)
    everywhere = torch.ones_like(truth, dtype=torch.bool)
    result["levels"] = {}
    for sigma in args.noise_levels:
        noisy = truth + sigma * torch.randn(truth.shape, generator=g)
        solve = lambda mean, cov, joint: denoising_posterior(mean, cov, noisy.flatten(1), sigma, joint)[:3]
        gauss_mean, gauss_draws = gaussian_estimates(gaussians, factors, solve, truth.flatten(1), labels,
                                                     args.n_draws, args.given_label, g)
        observed = noisy.repeat(args.n_draws, 1, 1, 1)
        posterior = lambda model, part: (lambda z, yb=None: with_noise_term(
            model(z, yb), z, observed[part].to(z.device, z.dtype), sigma))
        # a gradient step on ||x - y||^2 / 2 s^2 is stable below 2 s^2, and one of s^2 lands on y: the run's step size
        # (1 for M-EBM) would jump across it, so the chains take s^2 unless --sgld_lr is given
        step = args.sgld_lr or min(ev.sgld_lr, sigma ** 2)
        level = {"noisy_input": errors(noisy, truth, everywhere), "step_size": step,
                 **gaussian_rows(scorer, truth, labels, everywhere, gauss_mean, gauss_draws)}
        starts = {"from_noisy": noisy.clamp(-1, 1), "from_gaussian_mean": as_images(gauss_mean, truth)}
        for start_name, start in starts.items():
            ebm = chains(ev, posterior, start.repeat(args.n_draws, 1, 1, 1),
                         None if y is None else y.repeat(args.n_draws), steps, f"denoise {sigma:g} {start_name}", step)
            ebm = ebm.reshape(args.n_draws, n, *shape)
            level.update(ebm_rows(scorer, truth, labels, everywhere, ebm, f"_{start_name}"))
            if start_name == "from_noisy":
                grid(out, f"denoise_{sigma:g}.png", noisy.clamp(-1, 1), as_images(gauss_mean, truth), ebm, truth)
        result["levels"][f"{sigma:g}"] = level
    return result


def with_noise_term(outputs, z, observed, sigma):
    """(f(z) - ||z - observed||^2 / 2 sigma^2, logits): the log posterior of z given the noisy image, up to a
    constant."""
    f, logits = outputs
    return f - ((z - observed) ** 2).flatten(1).sum(1) / (2 * sigma ** 2), logits


def grid(out, name, corrupted, gauss_mean, ebm, truth, columns=10):
    """Rows: the corrupted input, the Gaussian's mean, the EBM's first draws, the truth (the first images)."""
    k = min(columns, len(truth))
    rows = [corrupted[:k], gauss_mean[:k], *[e[:k] for e in ebm[:2]], truth[:k]]
    save_grid(torch.cat(rows), os.path.join(out, name), nrow=k)


def check_restoration_flags(args):
    """One line for a count the scores are not defined on, before any work (argparse checks the masks and levels)."""
    if args.eval in ("inpaint", "denoise") and args.n_points is not None and args.n_points < 2:
        raise UserError(f"--n_points: restoration scores need at least 2 test images, got {args.n_points}")
