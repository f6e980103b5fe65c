"""Toy 2-D data with exact densities, the mixture energy with exact log Z, and toy_2d.py training."""
import json
import math
import os

import pytest
import torch

from conftest import run_script
from utils.toy import (GaussianMixtureEnergy, grid_points, mixture_log_density, rings_log_density, sample_mixture,
                       sample_rings)


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


def test_rings_density_integrates_to_one():
    pts, cell = grid_points(4.0, 801)
    assert float(rings_log_density(pts).exp().sum() * cell) == pytest.approx(1.0, rel=2e-3)


def test_gaussian_mixture_energy_log_z_and_samples():
    model = GaussianMixtureEnergy([[-1.0, 0.0], [2.0, 1.0]], [math.log(0.5), math.log(0.8)], [0.3, -0.2])
    pts, cell = grid_points(8.0, 801)
    with torch.no_grad():
        _, logits = model(pts)
    assert float(torch.logsumexp(logits.logsumexp(1), 0)) + math.log(cell) == pytest.approx(model.log_z(), abs=1e-3)
    assert float(torch.logsumexp(logits[:, 1], 0)) + math.log(cell) == pytest.approx(model.log_z(1), abs=1e-3)
    x = model.sample(40000, generator=torch.Generator().manual_seed(0))
    weight_1 = math.exp(-0.2) * 0.8 ** 2 / (math.exp(0.3) * 0.5 ** 2 + math.exp(-0.2) * 0.8 ** 2)
    exact_mean = torch.tensor([-1.0 * (1 - weight_1) + 2.0 * weight_1, 1.0 * weight_1], dtype=torch.float64)
    assert torch.allclose(x.mean(0), exact_mean, atol=0.03)


def test_toy_training_learns_the_mixture_and_ais_matches_quadrature(tmp_path):
    run = str(tmp_path / "toy")
    run_script("toy_2d.py", "--dataset", "mixture", "--n_iters", "300", "--batch_size", "128", "--grid", "100",
               "--ais_chains", "500", "--ais_temps", "100", "--save_dir", run, check=True, process=True)
    rows = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    final = json.load(open(os.path.join(run, "metrics.json")))
    assert final["tv"] < rows[0]["tv"] - 0.15 and final["kl_true_learned"] < 0.6 * rows[0]["kl_true_learned"]
    assert abs(final["log_z_ais"] - final["log_z_quadrature"]) < 3 * final["log_z_ais_se"] + 0.05
    for name in ("density.png", "training.png", "model.pt"):
        assert os.path.isfile(os.path.join(run, name))
