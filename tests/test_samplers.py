"""Each sampler on a 2-D Gaussian energy: stationary mean and covariance (MALA and HMC exact), modes for optimisers."""
import pytest
import torch

from utils.sampling.samplers import (SAMPLERS, adam_sample, annealed_langevin_sample, flow_sample, gd_momentum_sample,
                                     hmc_sample, langevin_exact_sample, langevin_sample, mala_sample, run_sampler,
                                     tutorial_sample)
from utils.sampling.sgld import sgld_sample

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
    # at step 0.55 the leapfrog energy error is large (acceptance about 0.66): accepting every proposal would
    # give the covariance [[1.20, 0.52], [0.52, 0.75]]; only the Metropolis correction keeps Sigma
    x, info = hmc_sample(neg_energy, starts(), n_steps=60, step_size=0.55, n_leapfrog=10)
    assert_gaussian(x, MU, SIGMA)
    assert 0.4 < float(info["acceptance"]) < 0.9


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


class Model(torch.nn.Module):
    def forward(self, x, y=None):
        return neg_energy(x.double().flatten(1)), None


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_trace_holds_energy_and_grad_norm_of_every_chain_at_every_step(sampler):
    x0 = starts(50) / 4  # inside [-1, 1], where the image samplers keep their chains
    trace = []
    run_sampler(sampler, Model(), x0, 7, 0.05, 0.01, bounds=None, trace=trace)
    assert len(trace) == 7 and all(t.shape == (2, 50) for t in trace)
    if sampler != "tutorial":  # the tutorial step adds noise before its first gradient
        d = x0 - MU
        assert torch.allclose(trace[0][0], (-neg_energy(x0)).float())
        assert torch.allclose(trace[0][1], (d @ PREC).norm(dim=1).float())


def test_trace_of_mala_reaches_the_equilibrium_energy_and_gradient():
    """For E = d'Pd / 2 in 2-D, at equilibrium mean E = 1 and mean ||grad E||^2 = trace(P)."""
    trace = []
    mala_sample(neg_energy, starts() * 3, 300, 0.4, trace=trace)
    trace = torch.stack(trace).double()
    assert trace[0, 0].mean() > 5
    assert abs(float(trace[-50:, 0].mean()) - 1.0) < 0.05
    assert abs(float((trace[-50:, 1] ** 2).mean()) / float(torch.trace(PREC)) - 1) < 0.05


DIRECT = {
    "sgld": lambda x: (sgld_sample(Model(), x, 5, 0.3, 0.05), {}),
    "jem": lambda x: langevin_sample(neg_energy, x, 5, 0.3, 0.05, None),  # JEM never clamps x
    "tutorial": lambda x: tutorial_sample(neg_energy, x, 5, 0.3, 0.05, bounds=(-1, 1)),
    "langevin": lambda x: langevin_sample(neg_energy, x, 5, 0.3, 0.05, (-1, 1)),
    "langevin_exact": lambda x: langevin_exact_sample(neg_energy, x, 5, 0.3, (-1, 1)),
    "annealed": lambda x: annealed_langevin_sample(neg_energy, x, 5, 0.3, 0.05, 100.0, bounds=(-1, 1)),
    "flow": lambda x: flow_sample(neg_energy, x, 5, 0.3, 0.05, 1.0, bounds=(-1, 1)),  # t = 1.2 at the last step: noise
    "gd_momentum": lambda x: gd_momentum_sample(neg_energy, x, 5, 0.3, bounds=(-1, 1)),
    "adam": lambda x: adam_sample(neg_energy, x, 5, 0.3, bounds=(-1, 1)),
    "mala": lambda x: (lambda s, i: (s.clamp(-1, 1), i))(*mala_sample(neg_energy, x, 5, 0.3)),
    "hmc": lambda x: (lambda s, i: (s.clamp(-1, 1), i))(*hmc_sample(neg_energy, x, 5, 0.3, 10)),
}


@pytest.mark.parametrize("name", SAMPLERS)
def test_run_sampler_dispatches_each_name_to_its_sampler(name):
    x0 = starts(100) / 4
    torch.manual_seed(3)
    got, info = run_sampler(name, Model(), x0, 5, 0.3, 0.05)
    torch.manual_seed(3)
    want, want_info = DIRECT[name](x0)
    assert torch.equal(got, want) and set(info) == set(want_info) and not torch.equal(got, x0)
    assert name == "jem" or (got.min() >= -1 and got.max() <= 1)


def test_run_sampler_unknown_name():
    with pytest.raises(ValueError, match="unknown sampler"):
        run_sampler("gibbs", Model(), starts(10), 1, 0.1, 0.0)
