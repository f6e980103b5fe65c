"""Toy 2-D datasets with known densities, for fast EBM experiments and exact checks (toy_2d.py trains on them)."""
import math

import torch
import torch.nn as nn


def mixture_params(n_modes=8, radius=2.0, std=0.2, dtype=torch.float64):
    """Centres of n_modes equal-weight Gaussians on a circle of `radius`, each with isotropic `std`."""
    angles = torch.arange(n_modes, dtype=dtype) * (2 * math.pi / n_modes)
    return torch.stack([radius * angles.cos(), radius * angles.sin()], 1), std


def sample_mixture(n, n_modes=8, radius=2.0, std=0.2, generator=None):
    centres, std = mixture_params(n_modes, radius, std)
    k = torch.randint(0, n_modes, (n,), generator=generator)
    return centres[k] + std * torch.randn(n, 2, generator=generator, dtype=centres.dtype)


def mixture_log_density(x, n_modes=8, radius=2.0, std=0.2):
    """Exact log density of sample_mixture's distribution."""
    centres, std = mixture_params(n_modes, radius, std, x.dtype)
    sq = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
    return torch.logsumexp(-sq / (2 * std ** 2), 1) - math.log(n_modes) - math.log(2 * math.pi * std ** 2)


def rings_log_density(x, n_rings=3, spacing=1.0, std=0.08):
    """Exact log density of sample_rings's distribution: a mixture over rings of N(r; R_k, std) / (2 pi r)."""
    radii = spacing * torch.arange(1, n_rings + 1, dtype=x.dtype)
    r = x.norm(dim=1).clamp_min(1e-12)
    log_radial = torch.logsumexp(torch.log(radii / radii.sum()) - (r[:, None] - radii) ** 2 / (2 * std ** 2), 1) \
        - 0.5 * math.log(2 * math.pi * std ** 2)
    return log_radial - torch.log(2 * math.pi * r)


def sample_rings(n, n_rings=3, spacing=1.0, std=0.08, generator=None):
    """Concentric rings of radii spacing, 2 spacing, ...; points spread in proportion to each ring's length."""
    radii = spacing * torch.arange(1, n_rings + 1, dtype=torch.float64)
    ring = torch.multinomial(radii / radii.sum(), n, replacement=True, generator=generator)
    angle = torch.rand(n, generator=generator, dtype=torch.float64) * 2 * math.pi
    r = radii[ring] + std * torch.randn(n, generator=generator, dtype=torch.float64)
    return torch.stack([r * angle.cos(), r * angle.sin()], 1)


class GaussianMixtureEnergy(nn.Module):
    """A joint EBM with exact normalisers: logits_k(x) = b_k - |x - mu_k|^2 / (2 s_k^2), f(x) = logsumexp_k.

    Same interface as models.energy.EnergyModel (forward returns (f or f[y], logits)), so training-loop code
    (thermo bookkeeping, samplers) runs on it unchanged while log Z is known in closed form.
    """

    def __init__(self, means, log_stds, biases):
        super().__init__()
        self.means = nn.Parameter(torch.as_tensor(means, dtype=torch.float64).clone())
        self.log_stds = nn.Parameter(torch.as_tensor(log_stds, dtype=torch.float64).clone())
        self.biases = nn.Parameter(torch.as_tensor(biases, dtype=torch.float64).clone())

    def forward(self, x, y=None):
        sq = ((x[:, None, :] - self.means[None]) ** 2).sum(-1)
        logits = self.biases - sq / (2 * torch.exp(2 * self.log_stds))
        f = logits.logsumexp(1) if y is None else logits.gather(1, y[:, None]).squeeze(1)
        return f, logits

    @torch.no_grad()
    def log_z(self, y=None):
        """Exact log of the integral of exp(f(x)) (marginal) or exp(f(x)[y]) (joint, class y) over R^2."""
        per_class = self.biases + math.log(2 * math.pi) + 2 * self.log_stds
        return float(per_class.logsumexp(0) if y is None else per_class[y])

    @torch.no_grad()
    def sample(self, n, y=None, generator=None):
        """Exact samples of p(x) (components drawn by weight) or of p(x | y)."""
        if y is None:
            weights = torch.softmax(self.biases + 2 * self.log_stds, 0)
            y = torch.multinomial(weights, n, replacement=True, generator=generator)
        else:
            y = torch.full((n,), y, dtype=torch.long)
        noise = torch.randn(n, 2, generator=generator, dtype=self.means.dtype)
        return self.means[y] + torch.exp(self.log_stds[y])[:, None] * noise


TOY_DATASETS = {"mixture": (sample_mixture, mixture_log_density), "rings": (sample_rings, rings_log_density)}


def grid_points(half_width, n, dtype=torch.float64):
    """(n*n points covering [-half_width, half_width]^2 row by row, area of one cell)."""
    axis = torch.linspace(-half_width, half_width, n, dtype=dtype)
    xx, yy = torch.meshgrid(axis, axis, indexing="xy")
    return torch.stack([xx.flatten(), yy.flatten()], 1), float(axis[1] - axis[0]) ** 2


def density_distances(log_p_true, log_q_unnorm, cell):
    """(KL(p || q), total variation) on a grid, both densities renormalised over the grid's area."""
    log_p = log_p_true - torch.logsumexp(log_p_true, 0)
    log_q = log_q_unnorm - torch.logsumexp(log_q_unnorm, 0)
    kl = float((log_p.exp() * (log_p - log_q)).sum())
    tv = float(0.5 * (log_p.exp() - log_q.exp()).abs().sum())
    return kl, tv
