"""Toy 2-D datasets with known densities, for fast EBM experiments and exact checks."""
import math

import torch


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


def sample_rings(n, n_rings=3, spacing=1.0, std=0.08, generator=None):
    """Concentric rings of radii spacing, 2 spacing, ...; points spread in proportion to each ring's length."""
    radii = spacing * torch.arange(1, n_rings + 1, dtype=torch.float64)
    ring = torch.multinomial(radii / radii.sum(), n, replacement=True, generator=generator)
    angle = torch.rand(n, generator=generator, dtype=torch.float64) * 2 * math.pi
    r = radii[ring] + std * torch.randn(n, generator=generator, dtype=torch.float64)
    return torch.stack([r * angle.cos(), r * angle.sin()], 1)
