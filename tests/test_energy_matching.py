"""Energy Matching: the OT pairing is a minimal-cost permutation, the flow and CD terms equal their formulas, the flow
sampler's schedule, a tiny run transports N(0, I) to a 2-D mixture, and the phase switch in a real training run
(at its iteration, bit-identical across a resume), with one-line errors for bad flags."""
import itertools
import math
import os

from conftest import TINY, error_line, run_script
import pytest
import torch

from models.energy_nets import PointEnergy
from utils.checkpoint import load_checkpoint
from utils.run_dir import read_metrics
from utils.sampling.samplers import flow_sample, flow_temperature_scale
from utils.toy import sample_mixture
from utils.training.energy_matching import EnergyMatchingLoss, flow_matching_loss, flow_weight, ot_pairing, trimmed_cd


def test_ot_pairing_is_the_minimal_cost_permutation():
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g) + 1
    perm = ot_pairing(x0, x1)
    assert sorted(perm.tolist()) == list(range(6))
    cost = lambda p: float(((x0[list(p)] - x1) ** 2).sum())
    best = min(cost(p) for p in itertools.permutations(range(6)))
    assert cost(perm.tolist()) == pytest.approx(best, rel=1e-9)
    assert cost(range(6)) > best  # the identity pairing of these draws is not optimal: the pairing did something


def test_flow_loss_equals_its_formula():
    m = torch.tensor([0.3, -0.2], dtype=torch.float64)
    neg_energy = lambda x: -0.5 * ((x - m) ** 2).sum(1)  # grad f = m - x
    g = torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(5, 2, generator=g, dtype=torch.float64), torch.randn(5, 2, generator=g, dtype=torch.float64)
    t = torch.tensor([0.1, 0.5, 0.75, 0.9, 1.0], dtype=torch.float64)
    loss, _ = flow_matching_loss(neg_energy, x0, x1, t, cutoff=0.5)
    loss = loss.detach()
    xt = (1 - t[:, None]) * x0 + t[:, None] * x1
    weight = torch.tensor([1.0, 1.0, 0.5, 0.2, 0.0], dtype=torch.float64)
    expected = (weight * (((m - xt) - (x1 - x0)) ** 2).mean(1)).mean()
    assert float(loss) == pytest.approx(float(expected), rel=1e-12)
    assert torch.equal(flow_weight(t, 1.0), torch.ones_like(t))


def test_trimmed_cd_drops_the_highest_negative_energies_and_is_floored():
    f_data = torch.tensor([1.0, 3.0])
    f_neg = torch.tensor([0.0, -1.0, -2.0, -10.0])  # energies 0, 1, 2, 10: a trim of 0.25 drops the 10
    assert float(trimmed_cd(f_data, f_neg, 0.25, 0.5, 0)) == pytest.approx(0.5 * (-2.0 - 1.0))
    assert float(trimmed_cd(f_data, f_neg, 0.0, 0.5, 0)) == pytest.approx(0.5 * (-2.0 - 13 / 4))
    assert float(trimmed_cd(f_data, f_neg, 0.25, 0.5, 0.02)) == pytest.approx(-0.02)


def test_flow_sampler_is_noise_free_before_the_cutoff_and_continues_across_pieces():
    assert [flow_temperature_scale(t, 0.5) for t in (0.2, 0.75, 1.0, 3.0)] == [0.0, 0.5, 1.0, 1.0]
    neg_energy = lambda x: -0.5 * (x ** 2).sum(1)  # the flow x <- (1 - dt) x
    x0 = torch.full((4, 2), 0.5)
    torch.manual_seed(0)
    flowed, _ = flow_sample(neg_energy, x0, 10, 0.1, 0.3, time_cutoff=1.0, bounds=None)
    assert torch.allclose(flowed, x0 * 0.9 ** 10)  # t = 0 .. 0.9: no noise at all
    torch.manual_seed(0)
    whole, _ = flow_sample(neg_energy, x0, 14, 0.1, 0.3, time_cutoff=1.0, bounds=None)
    torch.manual_seed(0)
    head, _ = flow_sample(neg_energy, x0, 10, 0.1, 0.3, window=(0, 14), bounds=None)
    tail, _ = flow_sample(neg_energy, head, 4, 0.1, 0.3, window=(10, 14), bounds=None)
    assert torch.equal(whole, tail) and not torch.allclose(whole, x0 * 0.9 ** 14)  # the tail adds noise
    # a Langevin tail of noise sqrt(2 dt T) samples exp(f / T): for this f, N(0, T I)
    torch.manual_seed(1)
    x, _ = flow_sample(neg_energy, torch.zeros(20000, 2), 400, 0.05, math.sqrt(2 * 0.05 * 0.25), bounds=None)
    assert (x.var(0) - 0.25 / (1 - 0.05 / 2)).abs().max() < 0.02


def test_energy_matching_transports_a_gaussian_to_the_mixture():
    """Flow phase only, then the gradient flow from t = 0 to 1: the samples' mean and covariance are the mixture's
    (mean 0, covariance (radius^2 / 2 + std^2) I = 2.04 I), where the start's is I."""
    torch.manual_seed(0)
    model = PointEnergy(2, 64, prior_std=10.0)
    start = lambda n: torch.randn(n, 2)
    loss_fn = EnergyMatchingLoss(model, 1.0, 0.0, start, ("flow", 100, 0.01, 0.0), 1.0, None, 0.0, 0.1, 0.0,
                                 bounds=None)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for it in range(150):
        loss, logs = loss_fn(sample_mixture(128).float(), iteration=it)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first and "loss/cd" not in logs  # no CD phase asked for
    x, _ = flow_sample(lambda z: model(z)[0], start(4000), 100, 0.01, 0.0, bounds=None)
    cov = torch.cov(x.T)
    assert x.mean(0).abs().max() < 0.15
    assert (cov.diagonal() - 2.04).abs().max() < 0.3 and cov[0, 1].abs() < 0.2


EM = ["--objective", "energy_matching", "--sampler", "flow", "--n_steps", "3", "--sgld_lr", "0.01", "--sgld_std",
      "0.01", "--norm", "none", "--init", "gm", "--cd_start_iter", "6", "--lambda_cd", "0.1", "--n_epochs", "1"]


def train(save, fmnist_root, fmnist_centers, *extra, check=True):
    return run_script("train_maebm.py", "--data_root", fmnist_root, "--center_dir", fmnist_centers, "--save_dir", save,
                      *TINY, *EM, *extra, check=check)


def test_the_cd_phase_starts_at_its_iteration_and_a_resume_across_it_is_bit_identical(tmp_path, fmnist_root,
                                                                                       fmnist_centers):
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    train(full, fmnist_root, fmnist_centers)
    train(part, fmnist_root, fmnist_centers, "--max_iters", "4")
    train(part, fmnist_root, fmnist_centers, "--resume", part)
    a, b = (load_checkpoint(os.path.join(d, "last_ckpt.pt")) for d in (full, part))
    assert a["iteration"] == b["iteration"] == 10 and a["replay_buffer"] is None
    assert all(torch.equal(a["model_state_dict"][k], b["model_state_dict"][k]) for k in a["model_state_dict"])
    rows = [r for r in read_metrics(os.path.join(full, "metrics.jsonl")) if "loss/flow" in r]
    assert [r["iteration"] for r in rows if "loss/cd" in r] == [6, 7, 8, 9]
    assert all(math.isfinite(r["loss/flow"]) and math.isfinite(r.get("loss/cd", 0)) for r in rows)
    out = str(tmp_path / "gen")
    run_script("eval_maebm.py", "--load_path", os.path.join(full, "last_ckpt.pt"), "--eval", "gen", "--variant",
               "project", "--n_samples", "8", "--batch_size", "8", "--no_fid", "--save_dir", out, check=True)
    assert os.path.exists(os.path.join(out, "gen_samples.npz"))


@pytest.mark.parametrize("flags, named", [(["--sampler", "sgld"], "--sampler"), (["--cd_trim_fraction", "1"],
                                          "--cd_trim_fraction"), (["--cd_start_iter", "-1"], "--cd_start_iter"),
                                          (["--time_cutoff", "1.5"], "--time_cutoff"), (["--lambda_cd", "-1"],
                                          "--lambda_cd")])
def test_bad_energy_matching_flags_give_one_line(flags, named, tmp_path, fmnist_root, fmnist_centers):
    proc = train(str(tmp_path / "run"), fmnist_root, fmnist_centers, *flags, check=False)
    assert proc.returncode == 2 and named in error_line(proc) and not os.path.exists(tmp_path / "run")


def test_toy_energy_matching_runs_both_phases_and_refuses_another_sampler(tmp_path):
    run = str(tmp_path / "toy")
    run_script("toy_2d.py", "--objective", "energy_matching", "--sampler", "flow", "--n_steps", "20", "--sgld_lr",
               "0.05", "--sgld_std", "0.01", "--cd_start_iter", "10", "--lambda_cd", "1", "--n_iters", "20",
               "--batch_size", "64", "--grid", "40", "--ais_chains", "0", "--print_every", "10", "--save_dir", run,
               check=True)
    rows = read_metrics(os.path.join(run, "metrics.jsonl"))
    assert [r["iteration"] for r in rows] == [0, 10, 20] and all(math.isfinite(r["kl_true_learned"]) for r in rows)
    samples = torch.load(os.path.join(run, "model.pt"))["replay_buffer"]
    assert samples.shape == (2000, 2) and torch.isfinite(samples).all()
    proc = run_script("toy_2d.py", "--objective", "energy_matching", "--save_dir", str(tmp_path / "bad"))
    assert proc.returncode == 2 and "--sampler" in error_line(proc) and not os.path.exists(tmp_path / "bad")
