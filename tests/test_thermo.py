"""--thermo bookkeeping: W, Q, dE, Jarzynski dF on hand-made energies, Jarzynski against AIS and the exact
answer along a slow parameter path; training runs record, resume and plot it."""
import csv
import math
import os

import pytest
import torch

from conftest import TINY, run_script
from utils.ais import ais_log_z
from utils.sampling.samplers import mala_sample
from utils.thermo import COLUMNS, ThermoRecorder, energies, jarzynski_std_error
from utils.toy import GaussianMixtureEnergy


def test_work_heat_and_jarzynski_by_hand():
    rec = ThermoRecorder(batch_size=2, device="cpu")
    # iteration 0: samples' energies 1, 3 before the update and 2, 3 after (marginal = joint here)
    rec.record(0, torch.tensor([[1.0, 3.0]] * 2), torch.tensor([[2.0, 3.0]] * 2))
    # iteration 1: new samples at 0, 1 before the update, 0.5, 2 after
    rec.record(1, torch.tensor([[0.0, 1.0]] * 2), torch.tensor([[0.5, 2.0]] * 2))
    h = dict(zip(COLUMNS, rec.history()[-1].tolist()))
    W = 0.5 + 0.75  # mean(E1 - E0) summed
    Q = 0.5 - 2.5  # mean E0(1) - mean E1(0)
    W_i = [(2 - 1) + (0.5 - 0), (3 - 3) + (2 - 1)]  # accumulated work per batch position
    dF = -math.log(sum(math.exp(-w) for w in W_i) / 2)
    assert h["W_marginal"] == pytest.approx(W) and h["Q_marginal"] == pytest.approx(Q)
    assert h["dE_marginal"] == pytest.approx(W + Q)
    assert h["dF_marginal"] == pytest.approx(dF)
    assert h["dissipation_marginal"] == pytest.approx(W - dF)
    assert h["I_marginal"] == pytest.approx(-Q - (W - dF))
    assert h["W_joint"] == pytest.approx(W)


def test_jarzynski_is_stable_for_large_changes():
    rec = ThermoRecorder(batch_size=3, device="cpu")
    rec.record(0, torch.zeros(2, 3), torch.tensor([[2000.0, 1000.0, 3000.0]] * 2))
    h = dict(zip(COLUMNS, rec.history()[-1].tolist()))
    assert h["dF_marginal"] == pytest.approx(1000.0 + math.log(3))


def test_jarzynski_along_a_slow_parameter_path_matches_ais_and_the_truth():
    """Parameters move from A to B in 100 steps; chains (MALA, started exactly in A) follow. The recorder's
    Jarzynski dF must equal log Z(A) - log Z(B), exactly known here and estimated independently by AIS."""
    torch.manual_seed(0)
    a = GaussianMixtureEnergy([[-1.0, 0.0], [1.0, 0.0]], [math.log(0.5)] * 2, [0.0, 0.0])
    b = GaussianMixtureEnergy([[-2.0, 1.0], [1.5, -0.5]], [math.log(0.7), math.log(0.4)], [0.5, -0.3])
    model = GaussianMixtureEnergy(a.means, a.log_stds, a.biases)
    theta = lambda t: {k: torch.lerp(a.state_dict()[k], b.state_dict()[k], t) for k in a.state_dict()}
    n, y_joint, n_path = 4000, 1, 100
    rec = ThermoRecorder(batch_size=n, device="cpu")
    x_m, x_j = a.sample(n), a.sample(n, y=y_joint)
    y = torch.full((n,), y_joint)
    for t in range(n_path):
        model.load_state_dict(theta(t / n_path))
        x_m, _ = mala_sample(lambda z: model(z)[0], x_m, 2, 0.25)
        x_j, _ = mala_sample(lambda z: model(z, y)[0], x_j, 2, 0.25)
        E0 = torch.stack([energies(model, x_m)[0][0], energies(model, x_j, y)[0][1]])
        model.load_state_dict(theta((t + 1) / n_path))
        rec.record(t, E0, torch.stack([energies(model, x_m)[0][0], energies(model, x_j, y)[0][1]]))
    final = dict(zip(COLUMNS, rec.history()[-1].tolist()))
    se_jarzynski = jarzynski_std_error(rec.W_i).tolist()
    for kind, cls, se_j in (("marginal", None, se_jarzynski[0]), ("joint", y_joint, se_jarzynski[1])):
        truth = a.log_z(cls) - b.log_z(cls)
        energy_b = (lambda z: -b(z)[0]) if cls is None else (lambda z: -b(z)[1][:, cls])
        ais_b, se_ais = ais_log_z(energy_b, 2, n_chains=2000, n_temps=200, base_std=2.0, mala_eps=0.3)
        ais = a.log_z(cls) - ais_b  # log Z(A) is exact: only B is estimated
        tolerance = 3 * math.hypot(se_j, se_ais) + 1e-3
        assert 0 < se_j < 0.05 and abs(final[f"dF_{kind}"] - truth) < 3 * se_j + 1e-3, (kind, final, truth)
        assert abs(final[f"dF_{kind}"] - ais) < tolerance, (kind, final[f"dF_{kind}"], ais, tolerance)
        # dissipation W - dF is non-negative (second law)
        assert final[f"dissipation_{kind}"] > -3 * se_j


def test_thermo_run_records_resumes_and_plots(tmp_path, fmnist_root, fmnist_centers):
    common = ["--data_root", fmnist_root, "--center_dir", fmnist_centers, *TINY, "--n_steps", "2", "--thermo",
              "--objective", "gcl", "--n_epochs", "2"]
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    run_script("train_maebm.py", *common, "--save_dir", full, check=True)
    rows = list(csv.DictReader(open(os.path.join(full, "thermo.csv"))))
    assert len(rows) == 20 and all(math.isfinite(float(v)) for r in rows for v in r.values())
    run_script("train_maebm.py", *common, "--save_dir", part, "--max_iters", "7", check=True)
    run_script("train_maebm.py", *common, "--resume", part, check=True)
    assert open(os.path.join(part, "thermo.csv")).read() == open(os.path.join(full, "thermo.csv")).read()
    proc = run_script("eval_maebm.py", "--load_path", os.path.join(full, "last_ckpt.pt"), "--eval", "thermo", check=True)
    for name in ("thermo_flows.png", "thermo_reversibility.png", "thermo_dissipation.png", "thermo_information.png"):
        assert os.path.isfile(os.path.join(full, "eval_thermo", name))
    assert "iterations=20" in proc.stdout


def test_thermo_on_a_classifier_only_run_samples_for_measurement(tmp_path, fmnist_root, fmnist_centers):
    """dcl trains only the cross-entropy; --thermo still records both energies on chains the model draws."""
    run = str(tmp_path / "dcl")
    run_script("train_maebm.py", "--data_root", fmnist_root, "--center_dir", fmnist_centers, *TINY, "--n_steps", "2",
               "--thermo", "--objective", "dcl", "--n_epochs", "1", "--save_dir", run, check=True)
    rows = list(csv.DictReader(open(os.path.join(run, "thermo.csv"))))
    assert len(rows) == 10
    for kind in ("marginal", "joint"):
        W = [float(r[f"W_{kind}"]) for r in rows]
        assert all(math.isfinite(float(r[f"dF_{kind}"])) for r in rows) and len(set(W)) > 1
    ckpt = torch.load(os.path.join(run, "last_ckpt.pt"), weights_only=False)
    assert ckpt["replay_buffer"].shape == (100, 1, 28, 28)
