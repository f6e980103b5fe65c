import numpy as np
import pytest
import torch

from utils.errors import UserError
from utils.gaussian import GaussianStart, center_paths, fit_gaussian_center, load_gaussian_start


def batches(x, y, bs):
    return [(x[i:i + bs], y[i:i + bs]) for i in range(0, len(x), bs)]


def test_fit_matches_numpy_mean_and_biased_covariance():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(300, 1, 4, 4, generator=g) * 2 - 1
    y = torch.arange(300) % 3
    moments = fit_gaussian_center(batches(x, y, 64), n_classes=3)
    mean, cov = moments.global_moments()
    flat = x.reshape(300, -1).double().numpy()
    np.testing.assert_allclose(mean.numpy(), flat.mean(0), atol=1e-12)
    np.testing.assert_allclose(cov.numpy(), np.cov(flat, rowvar=False, bias=True), atol=1e-12)
    means, covs = moments.class_moments()
    for c in range(3):
        part = flat[(y == c).numpy()]
        np.testing.assert_allclose(means[c].numpy(), part.mean(0), atol=1e-12)
        np.testing.assert_allclose(covs[c].numpy(), np.cov(part, rowvar=False, bias=True), atol=1e-12)


def test_large_images_are_fitted_at_32_and_samples_upsampled():
    x = torch.rand(20, 3, 64, 64) * 2 - 1
    mean, cov = fit_gaussian_center(batches(x, torch.zeros(20, dtype=torch.long), 8)).global_moments()
    assert mean.shape == (3 * 32 * 32,) and cov.shape == (3072, 3072)
    start = GaussianStart(mean, cov, (3, 64, 64))
    assert start.sample(5).shape == (5, 3, 64, 64)


def test_samples_follow_the_fitted_gaussian_and_are_clamped():
    torch.manual_seed(0)
    mean = torch.tensor([0.2, -0.3, 0.0, 0.1])
    a = torch.tensor([[0.2, 0.0, 0, 0], [0.1, 0.15, 0, 0], [0, 0, 0.1, 0], [0, 0, 0.05, 0.2]])
    cov = a @ a.T
    x = GaussianStart(mean, cov, (1, 2, 2), jitter=0).sample(40000).reshape(40000, -1).double()
    assert torch.allclose(x.mean(0), mean.double(), atol=0.01)
    assert torch.allclose(torch.cov(x.T), cov.double(), atol=0.01)
    wide = GaussianStart(torch.zeros(4), 25 * torch.eye(4), (1, 2, 2)).sample(1000)
    assert wide.min() >= -1 and wide.max() <= 1 and (wide.abs() == 1).any()


def test_per_class_start_uses_the_class_of_each_chain():
    means = torch.stack([torch.full((4,), -0.5), torch.full((4,), 0.5)])
    covs = torch.stack([0.01 * torch.eye(4)] * 2)
    start = GaussianStart(means, covs, (1, 2, 2))
    y = torch.tensor([0, 1] * 500)
    x = start.sample(1000, y).reshape(1000, -1)
    assert x[y == 0].mean() == pytest.approx(-0.5, abs=0.02)
    assert x[y == 1].mean() == pytest.approx(0.5, abs=0.02)


def test_per_class_start_applies_each_class_covariance_to_its_own_chains():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 4, 4, generator=g)
    covs, means = a @ a.transpose(1, 2) * 0.01, torch.randn(3, 4, generator=g) * 0.1
    start = GaussianStart(means, covs, (1, 2, 2), jitter=0)
    y = torch.randint(0, 3, (50,), generator=g)
    x = start.sample(50, y, generator=torch.Generator().manual_seed(1)).reshape(50, -1)
    eps = torch.randn(50, 4, 1, generator=torch.Generator().manual_seed(1))
    want = (means[y] + (torch.linalg.cholesky(covs.double()).float()[y] @ eps).squeeze(-1)).clamp(-1, 1)
    assert torch.allclose(x, want, atol=1e-6)
    # a 10,000-chain Fashion-MNIST buffer: one d x d factor per chain would need 24 GB
    big = GaussianStart(torch.zeros(10, 784), torch.eye(784).expand(10, 784, 784) * 0.01, (1, 28, 28))
    assert big.sample(10000).shape == (10000, 1, 28, 28)


def test_bad_gaussian_files_give_clear_errors(tmp_path):
    with pytest.raises(UserError, match="one_center.py --dataset fashionmnist"):
        load_gaussian_start(str(tmp_path), "fashionmnist", (1, 28, 28))
    mean_path, cov_path = center_paths(str(tmp_path), "fashionmnist")
    torch.save(torch.zeros(10), mean_path)
    torch.save(torch.eye(10), cov_path)
    with pytest.raises(UserError, match="expected a mean of 784 values"):
        load_gaussian_start(str(tmp_path), "fashionmnist", (1, 28, 28))
    torch.save(torch.zeros(784), mean_path)
    torch.save(-torch.eye(784), cov_path)
    with pytest.raises(UserError, match="not positive definite"):
        load_gaussian_start(str(tmp_path), "fashionmnist", (1, 28, 28))
