"""AIS log Z on energies with known normalisers lands within its standard error of the truth."""
import math

import torch

from utils.ais import ais_log_z

MU = torch.tensor([0.5, -1.0], dtype=torch.float64)
PREC = torch.linalg.inv(torch.tensor([[1.0, 0.6], [0.6, 0.5]], dtype=torch.float64))


def gaussian_energy(x):
    d = x - MU
    return 0.5 * ((d @ PREC) * d).sum(1) + 3.0  # the offset makes log Z move by -3


def mixture_energy(x, s=0.5):
    centres = torch.tensor([[-2.0, 0.0], [2.0, 0.5]], dtype=torch.float64)
    weights = torch.tensor([0.3, 0.7], dtype=torch.float64)
    sq = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
    return -torch.logsumexp(torch.log(weights) - sq / (2 * s ** 2), dim=1)


def test_ais_gaussian():
    torch.manual_seed(0)
    truth = math.log(2 * math.pi) - 0.5 * math.log(float(torch.linalg.det(PREC))) - 3.0
    est, se = ais_log_z(gaussian_energy, 2, n_chains=2000, n_temps=100)
    assert 0 < se < 0.05
    assert abs(est - truth) < 3 * se + 1e-3


def test_ais_two_mode_mixture():
    torch.manual_seed(1)
    truth = math.log(2 * math.pi * 0.5 ** 2)
    est, se = ais_log_z(mixture_energy, 2, n_chains=2000, n_temps=200, base_std=2.0, mala_eps=0.3)
    assert 0 < se < 0.1
    assert abs(est - truth) < 3 * se + 1e-3
