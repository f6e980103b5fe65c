import math

import pytest
import torch

from utils.toy import mixture_log_density, sample_mixture, sample_rings


def test_mixture_density_integrates_to_one_and_matches_samples():
    g = torch.Generator().manual_seed(0)
    grid = torch.linspace(-4, 4, 401, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    pts = torch.stack([xx.flatten(), yy.flatten()], 1)
    cell = (grid[1] - grid[0]) ** 2
    assert float(mixture_log_density(pts).exp().sum() * cell) == pytest.approx(1.0, rel=1e-3)
    x = sample_mixture(20000, generator=g)
    assert abs(float(x.norm(dim=1).mean()) - 2.0) < 0.02  # modes on the circle of radius 2
    # samples are far more likely under the true density than under a broad Gaussian
    broad = -(x ** 2).sum(1) / (2 * 4.0) - math.log(2 * math.pi * 4.0)
    assert float(mixture_log_density(x).mean()) > float(broad.mean()) + 1


def test_rings_radii():
    x = sample_rings(30000, n_rings=3, generator=torch.Generator().manual_seed(1))
    r = x.norm(dim=1)
    counts = [int(((r - k).abs() < 0.3).sum()) for k in (1, 2, 3)]
    assert sum(counts) > 29000
    assert abs(counts[2] / counts[0] - 3.0) < 0.3  # points in proportion to ring length
