"""Annealed importance sampling estimates of log Z for energies on R^d, with a standard error."""
import math

import torch

from utils.sampling.samplers import mala_sample


def gaussian_log_normaliser(dim, std):
    """log of the integral of exp(-|x|^2 / (2 std^2)) over R^dim."""
    return dim / 2 * math.log(2 * math.pi * std ** 2)


def ais_log_z(energy, dim, n_chains=1000, n_temps=200, base_std=1.0, mala_steps=2, mala_eps=0.2, generator=None,
              device="cpu", dtype=torch.float64):
    """(log Z estimate, standard error) of Z = integral exp(-energy(x)) dx over R^dim.

    Anneals from the Gaussian N(0, base_std^2 I) through p_b ∝ N(0, base_std^2)^(1-b) exp(-b energy) on a
    linear schedule of `n_temps` temperatures, with MALA moves at each temperature. The standard error of
    log mean w comes from the delta method: std(w) / (sqrt(n) mean(w)).
    """
    betas = torch.linspace(0, 1, n_temps + 1, dtype=dtype)
    base = lambda x: (x ** 2).sum(1) / (2 * base_std ** 2)
    x = torch.randn(n_chains, dim, generator=generator, dtype=dtype, device=device) * base_std
    log_w = torch.zeros(n_chains, dtype=dtype, device=device)
    for b_prev, b in zip(betas[:-1], betas[1:]):
        log_w = log_w + (b - b_prev) * (base(x) - energy(x)).detach()
        x, _ = mala_sample(lambda z, b=b: -((1 - b) * base(z) + b * energy(z)), x, mala_steps, mala_eps)
    log_mean_w = torch.logsumexp(log_w, 0) - math.log(n_chains)
    w = torch.exp(log_w - log_w.max())
    std_error = float(w.std() / (math.sqrt(n_chains) * w.mean()))
    return float(log_mean_w) + gaussian_log_normaliser(dim, base_std), std_error
