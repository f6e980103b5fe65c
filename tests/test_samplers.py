"""Each sampler on a 2-D Gaussian energy: stationary mean and covariance (MALA and HMC exact), modes for optimisers."""
import pytest
import torch

from utils.samplers import (adam_sample, gd_momentum_sample, hmc_sample, langevin_exact_sample, langevin_sample,
                            mala_sample, run_sampler, tutorial_sample)

MU = torch.tensor([0.5, -1.0], dtype=torch.float64)
SIGMA = torch.tensor([[1.0, 0.6], [0.6, 0.5]], dtype=torch.float64)
PREC = torch.linalg.inv(SIGMA)


def neg_energy(x):
    d = x - MU
    return -0.5 * ((d @ PREC) * d).sum(1)


def starts(n=4000, seed=0):
    torch.manual_seed(seed)
    return torch.randn(n, 2, dtype=torch.float64) * 2


def assert_gaussian(x, mean, cov, tol_mean=0.05, tol_cov=0.06):
    assert torch.allclose(x.mean(0), mean, atol=tol_mean), x.mean(0)
    assert torch.allclose(torch.cov(x.T), cov, atol=tol_cov), torch.cov(x.T)


def test_mala_is_exact():
    x, info = mala_sample(neg_energy, starts(), n_steps=400, eps=0.6)
    assert_gaussian(x, MU, SIGMA)
    assert 0.3 < float(info["acceptance"]) < 0.99


def test_hmc_is_exact():
    x, info = hmc_sample(neg_energy, starts(), n_steps=60, step_size=0.15, n_leapfrog=10)
    assert_gaussian(x, MU, SIGMA)
    assert 0.5 < float(info["acceptance"]) <= 1


def test_exact_langevin_with_small_steps():
    x, _ = langevin_exact_sample(neg_energy, starts(), n_steps=2000, eps=0.1)
    assert_gaussian(x, MU, SIGMA, tol_cov=0.08)


def test_tempered_langevin_scales_the_covariance():
    # step a, noise s: stationary covariance (s^2 / 2a) * Sigma; s^2 = 2a is exact Langevin
    x, _ = langevin_sample(neg_energy, starts(), n_steps=2000, step_size=0.005, noise_std=0.05)
    assert_gaussian(x, MU, 0.25 * SIGMA, tol_cov=0.03)


@pytest.mark.parametrize("sampler", [
    lambda x: gd_momentum_sample(neg_energy, x, 300, 0.01),
    lambda x: adam_sample(neg_energy, x, 3000, 0.02),
])
def test_noise_free_samplers_find_the_mode(sampler):
    x, _ = sampler(starts(200))
    assert torch.allclose(x, MU.expand_as(x), atol=0.02)


def test_tutorial_step_climbs_f_and_stays_in_bounds():
    torch.manual_seed(0)
    x0 = torch.rand(500, 2, dtype=torch.float64) * 2 - 1
    x, _ = tutorial_sample(neg_energy, x0, n_steps=60, step_size=10, noise_std=0.005)
    assert x.min() >= -1 and x.max() <= 1
    assert neg_energy(x).mean() > 0.5 * neg_energy(x0).mean()  # f <= 0 here: the chains climb most of the way


def test_run_sampler_dispatch_and_unknown_name():
    class Model(torch.nn.Module):
        def forward(self, x, y=None):
            return neg_energy(x.double().flatten(1)), None
    x, info = run_sampler("mala", Model(), starts(100), 5, 0.3, 0.0, bounds=None)
    assert x.shape == (100, 2) and "acceptance" in info
    with pytest.raises(ValueError, match="unknown sampler"):
        run_sampler("gibbs", Model(), starts(10), 1, 0.1, 0.0)
