"""Chain-free objectives (DSM, SSM, NCE): each loss equals its formula written out by hand, each recovers a
Gaussian's precision matrix (NCE also its log Z) with a quadratic energy, and the annealed Langevin schedule."""
import importlib.util
import json
import math
import os

from conftest import ROOT, TINY, error_line, run_script
import numpy as np
import pytest
import torch
import torch.nn as nn

from utils.checkpoint import load_checkpoint
from utils.run_dir import read_metrics
from utils.sampling.samplers import anneal_scale, annealed_langevin_sample
from utils.training.chain_free import ChainFreeLoss, dsm_loss, nce_loss, ssm_loss

COV = torch.tensor([[1.0, 0.6], [0.6, 2.0]], dtype=torch.float64)
MEAN = torch.tensor([0.5, -1.0], dtype=torch.float64)


class Quadratic(nn.Module):
    """f(x) = -1/2 (x - m)^T P (x - m) with P = L L^T: an exactly normalisable energy."""

    def __init__(self):
        super().__init__()
        self.tril = nn.Parameter(torch.eye(2, dtype=torch.float64))
        self.m = nn.Parameter(torch.zeros(2, dtype=torch.float64))

    @property
    def precision(self):
        lower = torch.tril(self.tril)
        return lower @ lower.T

    def forward(self, x):
        d = x - self.m
        return -0.5 * ((d @ self.precision) * d).sum(1)

    def log_z(self):
        """log of the integral of exp f: d/2 log 2 pi - 1/2 log det P."""
        return math.log(2 * math.pi) - 0.5 * torch.logdet(self.precision)


def gaussian_data(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return MEAN + torch.randn(n, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(COV).T


def fit(loss_fn, steps=600, extra=()):
    """Adam from the identity, lr 0.05 decayed 10x at half and three quarters: the last steps average the noise."""
    torch.manual_seed(0)
    model = Quadratic()
    opt = torch.optim.Adam([*model.parameters(), *extra], lr=0.05)
    schedule = torch.optim.lr_scheduler.MultiStepLR(opt, [steps // 2, 3 * steps // 4], 0.1)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(model).backward()
        opt.step()
        schedule.step()
    return model


def test_dsm_equals_its_formula():
    model, x = Quadratic(), gaussian_data(5)
    with torch.no_grad():
        model.tril.copy_(torch.tensor([[1.3, 0.0], [0.4, 0.7]]))
    sigma = torch.tensor([0.1, 0.2, 0.3, 0.1, 0.5], dtype=torch.float64)
    eps = gaussian_data(5, seed=1) - MEAN
    loss, _ = dsm_loss(model, x, sigma, eps)
    x_noisy = x + sigma[:, None] * eps
    score = -(x_noisy - model.m) @ model.precision  # grad of f, P symmetric
    target = -(x_noisy - x) / sigma[:, None] ** 2  # grad of log N(x~; x, sigma^2 I)
    by_hand = (0.5 * sigma ** 2 * ((score - target) ** 2).sum(1)).mean()
    assert float(loss) == pytest.approx(float(by_hand), rel=1e-10)


def test_ssm_equals_its_formula():
    model, x = Quadratic(), gaussian_data(6)
    with torch.no_grad():
        model.tril.copy_(torch.tensor([[1.3, 0.0], [0.4, 0.7]]))
    v = torch.sign(gaussian_data(6, seed=2) - MEAN)
    loss, _ = ssm_loss(model, x, v)
    p = model.precision
    score = -(x - model.m) @ p
    by_hand = (-((v @ p) * v).sum(1) + 0.5 * (score * v).sum(1) ** 2).mean()  # v^T (ds/dx) v = -v^T P v
    assert float(loss) == pytest.approx(float(by_hand), rel=1e-10)


def test_nce_equals_its_formula():
    log_p_data, log_q_data = torch.tensor([-1.0, 0.5]), torch.tensor([-2.0, -0.3])
    log_p_noise, log_q_noise = torch.tensor([-3.0, -1.0, 0.2]), torch.tensor([-1.0, -1.5, -0.7])
    ratio = 3
    loss, acc = nce_loss(log_p_data, log_p_noise, log_q_data, log_q_noise, ratio)
    sig = lambda t: 1 / (1 + math.exp(-t))
    h_data = [sig(a - b - math.log(ratio)) for a, b in zip(log_p_data.tolist(), log_q_data.tolist())]
    h_noise = [sig(a - b - math.log(ratio)) for a, b in zip(log_p_noise.tolist(), log_q_noise.tolist())]
    by_hand = -(sum(math.log(h) for h in h_data) / 2 + ratio * sum(math.log(1 - h) for h in h_noise) / 3)
    assert float(loss) == pytest.approx(by_hand, rel=1e-6)
    assert float(acc) == pytest.approx(sum([h > 0.5 for h in h_data] + [h < 0.5 for h in h_noise]) / 5)


def assert_recovers_the_gaussian(model, atol):
    assert torch.allclose(model.precision, torch.linalg.inv(COV), atol=atol), model.precision
    assert torch.allclose(model.m, MEAN, atol=0.1), model.m


class TinyImageEnergy(nn.Module):
    """f(x) = -sum (w x)^2 over the values of each image, returned as the project's models return it."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.linspace(0.5, 1.5, 12).view(1, 3, 2, 2))

    def forward(self, x, y=None):
        return (-((self.w * x) ** 2).flatten(1).sum(1), None)


@pytest.mark.parametrize("objective", ["dsm", "ssm"])
def test_the_per_pixel_scale_divides_the_per_image_loss_by_the_values_per_image(objective):
    x = torch.randn(5, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    values = {}
    for per_pixel in (False, True):
        term = ChainFreeLoss(TinyImageEnergy(), objective, 1.0, 0.0, sigmas=(0.1, 0.3), per_pixel=per_pixel)
        torch.manual_seed(1)  # the same noise levels, noise and projections for both
        values[per_pixel] = float(term(x_data=x)[0])
    assert values[False] > 0
    assert values[True] == pytest.approx(values[False] / 12, rel=1e-6)


def test_dsm_with_a_small_sigma_recovers_the_precision():
    x = gaussian_data(10000)
    sigma = torch.full((len(x),), 0.1, dtype=torch.float64)
    model = fit(lambda m: dsm_loss(m, x, sigma, torch.randn_like(x))[0])
    assert_recovers_the_gaussian(model, atol=0.05)  # DSM's optimum, (COV + 0.01 I)^-1, is 0.015 away


def test_ssm_recovers_the_precision():
    x = gaussian_data(10000)
    model = fit(lambda m: ssm_loss(m, x, torch.randn_like(x).sign())[0])
    assert_recovers_the_gaussian(model, atol=0.05)


def test_nce_with_a_gaussian_noise_recovers_the_precision_and_log_z():
    x = gaussian_data(10000)
    noise = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64),
                                                   covariance_matrix=4 * torch.eye(2, dtype=torch.float64))
    log_z = nn.Parameter(torch.zeros((), dtype=torch.float64))

    def loss(m):
        z = noise.sample((4 * len(x),))
        return nce_loss(m(x) - log_z, m(z) - log_z, noise.log_prob(x), noise.log_prob(z), 4)[0]
    model = fit(loss, extra=[log_z])
    assert_recovers_the_gaussian(model, atol=0.1)
    true_log_z = math.log(2 * math.pi) + 0.5 * float(torch.logdet(COV))
    assert float(log_z) == pytest.approx(float(model.log_z()), abs=0.05)  # normalised: the learned density
    assert float(log_z) == pytest.approx(true_log_z, abs=0.1)


def test_annealed_langevin_shrinks_its_moves_and_samples_a_gaussian():
    assert anneal_scale(100.0, 0, 5) == pytest.approx(100) and anneal_scale(100.0, 4, 5) == pytest.approx(1)
    assert anneal_scale(100.0, 2, 5) == pytest.approx(10)
    torch.manual_seed(0)
    neg_energy = lambda z: -0.5 * (z ** 2).sum(1)  # standard normal
    x0 = torch.full((4000, 2), 5.0)
    # eps^2 / 2 step with eps noise: the exact Langevin ratio, so the chains end near N(0, I)
    x, _ = annealed_langevin_sample(neg_energy, x0, 400, 0.005, 0.1, 10.0)
    assert x.mean(0).abs().max() < 0.1 and (x.var(0) - 1).abs().max() < 0.15
    # run in two pieces with a window, the schedule continues where it stopped: the same chain
    torch.manual_seed(1)
    whole, _ = annealed_langevin_sample(neg_energy, x0[:10], 6, 0.05, 0.1, 10.0)
    torch.manual_seed(1)
    half, _ = annealed_langevin_sample(neg_energy, x0[:10], 3, 0.05, 0.1, 10.0, window=(0, 6))
    rest, _ = annealed_langevin_sample(neg_energy, half, 3, 0.05, 0.1, 10.0, window=(3, 6))
    assert torch.allclose(whole, rest)


CHAIN_FREE_RUNS = {"dsm": ["--dsm_sigmas", "0.3", "0.1"], "ssm": ["--ssm_projections", "2", "--ssm_dist", "gaussian"],
                   "nce": ["--init", "gm_class", "--nce_ratio", "2"]}


def train(save, fmnist_root, fmnist_centers, objective, *extra, check=True):
    return run_script("train_maebm.py", "--data_root", fmnist_root, "--center_dir", fmnist_centers, "--save_dir", save,
                      *TINY, "--objective", objective, *CHAIN_FREE_RUNS[objective], "--sampler", "annealed",
                      "--n_steps", "3", "--sgld_lr", "0.01", "--sgld_std", "0.01", "--norm", "none", *extra,
                      check=check)


@pytest.mark.parametrize("objective", list(CHAIN_FREE_RUNS))
def test_a_chain_free_run_resumes_bit_identically_and_samples(objective, tmp_path, fmnist_root, fmnist_centers):
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    train(full, fmnist_root, fmnist_centers, objective, "--n_epochs", "1")
    train(part, fmnist_root, fmnist_centers, objective, "--n_epochs", "1", "--max_iters", "4")
    train(part, fmnist_root, fmnist_centers, objective, "--n_epochs", "1", "--resume", part)
    a, b = (load_checkpoint(os.path.join(d, "last_ckpt.pt")) for d in (full, part))
    assert a["iteration"] == b["iteration"] == 10 and a["replay_buffer"] is None  # no chains, no buffer
    assert a["model_state_dict"].keys() == b["model_state_dict"].keys()
    assert all(torch.equal(a["model_state_dict"][k], b["model_state_dict"][k]) for k in a["model_state_dict"])
    assert ("log_z" in a["model_state_dict"]) == (objective == "nce")
    rows = [r for r in read_metrics(os.path.join(full, "metrics.jsonl")) if "loss/px" in r]
    assert len(rows) == 10 and all(math.isfinite(r["loss/px"]) for r in rows)
    if objective == "nce":
        assert rows[-1]["nce/log_z"] != 0 and 0 <= rows[-1]["nce/acc"] <= 1
    out = str(tmp_path / "gen")
    proc = run_script("eval_maebm.py", "--load_path", os.path.join(full, "last_ckpt.pt"), "--eval", "gen",
                      "--variant", "project", "--n_samples", "8", "--batch_size", "8", "--no_fid", "--save_dir", out,
                      check=True)
    result = json.load(open(os.path.join(out, "gen.json")))
    assert result["n_sample_steps"] == 3  # K, not K times buffer draws: the run had no chains


@pytest.mark.parametrize("objective", list(CHAIN_FREE_RUNS))
def test_a_chain_free_run_rolls_back_on_divergence(objective, tmp_path, fmnist_root, fmnist_centers):
    save = str(tmp_path / "run")
    proc = train(save, fmnist_root, fmnist_centers, objective, "--n_epochs", "1", "--warmup_iters", "0",
                 "--diverge_threshold", "1e-9", "--max_rollbacks", "1", check=False)
    assert proc.returncode == 2 and "after 1 rollbacks" in error_line(proc)
    assert "rolled back" in open(os.path.join(save, "log.txt")).read()
    assert load_checkpoint(os.path.join(save, "last_ckpt.pt"))["iteration"] == 0  # the good state is kept


def test_sm_scale_pixel_reaches_the_training_loss(tmp_path, fmnist_root, fmnist_centers):
    first = {}
    for scale in ("image", "pixel"):
        save = str(tmp_path / scale)
        train(save, fmnist_root, fmnist_centers, "dsm", "--n_epochs", "1", "--max_iters", "1", "--sm_scale", scale)
        first[scale] = read_metrics(os.path.join(save, "metrics.jsonl"))[0]["loss/px"]
    assert first["pixel"] == pytest.approx(first["image"] / 784, rel=1e-5)  # the same batch, noise and weights


def test_chain_free_flags_are_checked(tmp_path, fmnist_root, fmnist_centers):
    nce_data = train(str(tmp_path / "a"), fmnist_root, fmnist_centers, "nce", "--init", "data", check=False)
    assert "--init" in error_line(nce_data) and not os.path.exists(tmp_path / "a")
    cond = train(str(tmp_path / "b"), fmnist_root, fmnist_centers, "dsm", "--class_cond_p_x_sample", check=False)
    assert "--class_cond_p_x_sample" in error_line(cond)
    for flag, value in (("--dsm_sigma", "0"), ("--ssm_projections", "0"), ("--nce_ratio", "-1"),
                        ("--anneal_factor", "0.5")):
        proc = train(str(tmp_path / "c"), fmnist_root, fmnist_centers, "dsm", flag, value, check=False)
        assert proc.returncode == 2 and flag in error_line(proc)


@pytest.mark.parametrize("init", ["u", "n", "gm", "gm_class"])
def test_nce_noise_has_the_exact_density_of_its_draws(init, fmnist_centers):
    from types import SimpleNamespace
    from scipy.stats import multivariate_normal
    from utils.gaussian import center_paths, load_gaussian_start
    from utils.sampling.starts import start_density
    density = start_density(SimpleNamespace(init=init, center_dir=fmnist_centers, dataset="fashionmnist"),
                            (1, 28, 28), torch.device("cpu"))
    torch.manual_seed(0)
    x = density.sample(4)
    assert x.shape == (4, 1, 28, 28)
    flat = x.flatten(1).double().numpy()
    if init == "u":
        want = np.full(4, -784 * math.log(2))
    elif init == "n":
        want = multivariate_normal(np.zeros(784), np.eye(784)).logpdf(flat)
    else:  # the fitted Gaussian(s), with the jitter the starts add, unclamped; gm_class: equal-weight mixture
        mean, cov = (torch.load(p).double().numpy() for p in center_paths(fmnist_centers, "fashionmnist", init == "gm_class"))
        mean, cov = mean.reshape(-1, 784), cov.reshape(-1, 784, 784) + 1e-4 * np.eye(784)
        per_class = np.stack([multivariate_normal(m, c).logpdf(flat) for m, c in zip(mean, cov)])
        want = np.logaddexp.reduce(per_class, axis=0) - math.log(len(mean))
        torch.manual_seed(0)  # the draws are the Gaussian's own, unclamped (the starts clamp to [-1, 1])
        gauss = load_gaussian_start(fmnist_centers, "fashionmnist", (1, 28, 28), init == "gm_class")
        assert torch.equal(x.flatten(1), gauss.draw(4))
    assert np.allclose(density.log_prob(x).double().numpy(), want, rtol=1e-4, atol=1e-2)


def load_score_levels():
    spec = importlib.util.spec_from_file_location("score_levels", os.path.join(ROOT, "bench", "score_levels.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.score_levels


def test_score_levels_of_the_exact_gaussian_score_and_of_a_zero_score():
    """Data N(0, s^2 I) noised at sigma: the exact score -x~ / (s^2 + sigma^2) gives DSM 0.5 s^2 / (s^2 + sigma^2) per
    pixel and the Wiener error s^2 sigma^2 / (s^2 + sigma^2); a zero score gives 0.5 and leaves the noise."""
    score_levels = load_score_levels()
    s2, sigma = 0.25, 0.5
    x = torch.randn(4000, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * s2 ** 0.5
    exact = lambda z: -(z ** 2).flatten(1).sum(1) / (2 * (s2 + sigma ** 2))
    dsm, noisy, denoised = score_levels(exact, x, [sigma], torch.Generator().manual_seed(1))[sigma]
    assert noisy == pytest.approx(sigma ** 2, rel=0.02)
    assert dsm == pytest.approx(0.5 * s2 / (s2 + sigma ** 2), rel=0.02)
    assert denoised == pytest.approx(s2 * sigma ** 2 / (s2 + sigma ** 2), rel=0.02)
    dsm, noisy, denoised = score_levels(lambda z: 0 * z.flatten(1).sum(1), x, [sigma],
                                        torch.Generator().manual_seed(1))[sigma]
    assert dsm == pytest.approx(0.5, rel=0.02) and denoised == pytest.approx(noisy)
