"""Inpainting and denoising: the fitted Gaussian's exact conditional and posterior, chains on the missing pixels,
and eval_maebm.py's inpaint / denoise modes."""
import json
import os

import pytest
import torch

from conftest import TINY, run_script
from utils.evaluation.restoration import MASKS, gaussian_estimates, missing_pixels, pinned_energy
from utils.gaussian_posterior import condition_on_pixels, denoising_posterior
from utils.sampling.samplers import run_sampler


def small_gaussian(d=6, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    cov = (a @ a.T / d + 0.3 * torch.eye(d, dtype=torch.float64)) * scale ** 2
    return torch.randn(d, generator=g, dtype=torch.float64) * scale, cov


def test_gaussian_conditional_and_posterior_equal_direct_computations():
    mean, cov = small_gaussian()
    known = torch.tensor([[1, 0, 1, 0, 0, 1], [0, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    x = torch.randn(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    cond_mean, loglik, _, cond_cov = condition_on_pixels(mean, cov, known, x, with_cov=True)
    for i in range(3):
        o, u = known[i], ~known[i]
        gain = cov[u][:, o] @ torch.linalg.inv(cov[o][:, o])
        assert torch.allclose(cond_mean[i, u], mean[u] + gain @ (x[i, o] - mean[o]), atol=1e-12)
        assert torch.equal(cond_mean[i, o], x[i, o])  # the known pixels exactly
        assert torch.allclose(cond_cov[i][u][:, u], cov[u][:, u] - gain @ cov[o][:, u], atol=1e-12)
        assert cond_cov[i][o].abs().max() < 1e-12
        direct = torch.distributions.MultivariateNormal(mean[o], cov[o][:, o]).log_prob(x[i, o])
        assert loglik[i] == pytest.approx(float(direct), abs=1e-10)
    # the posterior mean is the Wiener filter mean + cov (cov + s^2 I)^-1 (y - mean)
    y, sigma = x, 0.5
    post_mean, post_loglik, _, post_cov = denoising_posterior(mean, cov, y, sigma)
    wiener = cov @ torch.linalg.inv(cov + sigma ** 2 * torch.eye(6, dtype=torch.float64))
    assert torch.allclose(post_mean, mean + (y - mean) @ wiener.T, atol=1e-12)
    assert torch.allclose(post_cov, cov - wiener @ cov, atol=1e-12)
    evidence = torch.distributions.MultivariateNormal(mean, cov + sigma ** 2 * torch.eye(6, dtype=torch.float64))
    assert torch.allclose(post_loglik, evidence.log_prob(y), atol=1e-10)


def test_gaussian_samples_follow_the_conditional_and_the_mixture_picks_the_evidences_class():
    (m0, c0), (m1, c1) = small_gaussian(seed=0), small_gaussian(seed=1)
    m1 = m1 + 6.0  # the classes far apart: the known pixels tell which one an image came from
    known = torch.tensor([[1, 1, 1, 0, 0, 0]] * 2, dtype=torch.bool)
    x = torch.stack([m0, m1])  # image 0 looks like class 0, image 1 like class 1
    factors = [torch.linalg.cholesky(c) for c in (c0, c1)]
    solve = lambda mean, cov, joint: condition_on_pixels(mean, cov, known, x, joint)[:3]
    g = torch.Generator().manual_seed(0)
    mixture_mean, draws = gaussian_estimates([(m0, c0), (m1, c1)], factors, solve, x, None, 4000, False, g)
    for i, (m, c) in enumerate(((m0, c0), (m1, c1))):
        exact_mean, _, _, exact_cov = condition_on_pixels(m, c, known[i:i + 1], x[i:i + 1], with_cov=True)
        assert torch.allclose(mixture_mean[i], exact_mean[0], atol=1e-6)
        free = ~known[i]
        assert torch.allclose(draws[i][:, free].mean(0), exact_mean[0, free], atol=0.06)
        assert torch.allclose(torch.cov(draws[i][:, free].T), exact_cov[0][free][:, free], atol=0.08)
        assert torch.equal(draws[i][:, ~free], x[i, ~free].expand(4000, -1))
    # given the (wrong) label, each image takes that class's conditional instead
    given_mean, _ = gaussian_estimates([(m0, c0), (m1, c1)], factors, solve, x, torch.tensor([1, 0]), 2, True, g)
    assert torch.allclose(given_mean[0], condition_on_pixels(m1, c1, known[:1], x[:1])[0][0])


def test_chains_on_the_missing_pixels_of_a_gaussian_energy_sample_its_exact_conditional():
    mean, cov = small_gaussian(d=4, seed=2, scale=0.15)
    precision = torch.linalg.inv(cov).float()
    mu = mean.float()

    def gaussian_energy(z, y=None):  # f(x) = log N(x; mean, cov) + const, on 1 x 2 x 2 images
        r = z.flatten(1) - mu
        return -0.5 * ((r @ precision) * r).sum(1), None
    n = 3000
    known = torch.tensor([True, False, True, False]).view(1, 1, 2, 2).expand(n, 1, 2, 2)
    kept = (mu + torch.tensor([0.1, 0.0, -0.2, 0.0])).view(1, 1, 2, 2).expand(n, 1, 2, 2)
    x0 = torch.where(known, kept, torch.zeros(n, 1, 2, 2))
    torch.manual_seed(0)
    step = 0.002  # Langevin on exp(f): noise sqrt(2 step)
    x, _ = run_sampler("langevin", pinned_energy(gaussian_energy, known, kept), x0, 1500, step, (2 * step) ** 0.5,
                       bounds=None)
    x = torch.where(known, kept, x).flatten(1).double()
    exact_mean, _, _, exact_cov = condition_on_pixels(mean, cov, known[:1].flatten(1), kept[:1].flatten(1).double(),
                                                      with_cov=True)
    free = ~known[0].flatten()
    assert torch.allclose(x[:, free].mean(0), exact_mean[0, free], atol=0.01)
    assert torch.allclose(torch.cov(x[:, free].T), exact_cov[0][free][:, free], rtol=0.1, atol=2e-4)


def test_masks_cover_what_they_name():
    assert missing_pixels("centre", 2, (1, 8, 8), 0)[0, 0].nonzero().tolist()[0] == [2, 2]
    assert missing_pixels("centre", 2, (1, 8, 8), 0).sum() == 2 * 16
    left = missing_pixels("left", 1, (3, 4, 4), 0)[0]
    assert left[:, :, :2].all() and not left[:, :, 2:].any()
    assert missing_pixels("bottom", 1, (1, 4, 4), 0)[0, 0, 2:].all()
    random = missing_pixels("random90", 200, (3, 8, 8), 0)
    assert abs(float(random.float().mean()) - 0.9) < 0.02 and torch.equal(random[:, 0], random[:, 2])
    assert set(MASKS) == {"centre", "left", "right", "bottom", "random50", "random90"}


@pytest.fixture(scope="module")
def class_gaussian_run(tmp_path_factory, fmnist_root, fmnist_centers):
    save = str(tmp_path_factory.mktemp("restore") / "run")
    run_script("train_maebm.py", "--data_root", fmnist_root, "--center_dir", fmnist_centers, "--save_dir", save, *TINY,
               "--max_iters", "6", "--init", "gm_class", "--n_steps", "2", "--sgld_std", "0.01", check=True)
    return os.path.join(save, "last_ckpt.pt")


@pytest.mark.usefixtures("fid_weights")
def test_inpaint_and_denoise_write_their_results_and_keep_the_known_pixels(class_gaussian_run, tmp_path, monkeypatch):
    from utils.evaluation import restoration
    completions = []
    save = restoration.grid
    monkeypatch.setattr(restoration, "grid", lambda out, name, corrupted, mean, ebm, truth: completions.append(
        (name, ebm, truth)) or save(out, name, corrupted, mean, ebm, truth))
    common = ["--load_path", class_gaussian_run, "--n_points", "12", "--n_draws", "2", "--batch_size", "12",
              "--fid_ref_n", "12"]
    run_script("eval_maebm.py", *common, "--eval", "inpaint", "--masks", "centre", "random50", "--save_dir",
               tmp_path / "inpaint", check=True)
    result = json.load(open(tmp_path / "inpaint" / "inpaint.json"))
    assert result["n_images"] == 12 and result["gaussians"] == 10 and result["n_steps"] == 2
    for name in ("centre", "random50"):
        row = result["masks"][name]
        for method in ("gaussian_mean", "gaussian_sample", "ebm_sample"):
            assert row[method]["mse"] > 0 and row[method]["fid"] > 0 and 0 <= row[method]["accuracy"] <= 1
        assert os.path.isfile(tmp_path / "inpaint" / f"inpaint_{name}.png")
    assert result["masks"]["centre"]["missing_fraction"] == 0.25
    # the known pixels of every completion are the test image's, bit for bit
    assert [c[0] for c in completions] == ["inpaint_centre.png", "inpaint_random50.png"]
    for name, ebm, truth in completions:
        free = missing_pixels(name.removeprefix("inpaint_").removesuffix(".png"), len(truth), truth.shape[1:], 1)
        assert torch.equal(torch.where(free, 0, ebm), torch.where(free, 0, truth).expand_as(ebm))
        assert not torch.equal(ebm[0][free], truth[free])
    run_script("eval_maebm.py", *common, "--eval", "denoise", "--noise_levels", "0.2", "--no_fid", "--save_dir",
               tmp_path / "denoise", check=True)
    level = json.load(open(tmp_path / "denoise" / "denoise.json"))["levels"]["0.2"]
    assert level["step_size"] == pytest.approx(0.04) and level["gaussian_mean"]["mse"] < level["noisy_input"]["mse"]
    assert {"ebm_sample_from_noisy", "ebm_sample_from_gaussian_mean", "gaussian_sample"} <= set(level)
    assert os.path.isfile(tmp_path / "denoise" / "denoise_0.2.png")
    rows = [json.loads(line) for line in open(os.path.join(os.path.dirname(class_gaussian_run), "metrics.jsonl"))]
    assert any("eval/denoise/levels/0.2/gaussian_mean/psnr" in r for r in rows)  # recorded in the run's logs too
