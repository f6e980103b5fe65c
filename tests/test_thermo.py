"""--thermo bookkeeping: W, Q, dE, Jarzynski dF on hand-made energies; a training run records and plots it."""
import csv
import math
import os

import pytest
import torch

from conftest import TINY, run_script
from utils.thermo import COLUMNS, ThermoRecorder


def test_work_heat_and_jarzynski_by_hand():
    rec = ThermoRecorder(batch_size=2, device="cpu")
    # iteration 0: samples' energies 1, 3 before the update and 2, 3 after (marginal = joint here)
    rec.record(0, torch.tensor([[1.0, 3.0]] * 2), torch.tensor([[2.0, 3.0]] * 2))
    # iteration 1: new samples at 0, 1 before the update, 0.5, 2 after
    rec.record(1, torch.tensor([[0.0, 1.0]] * 2), torch.tensor([[0.5, 2.0]] * 2))
    h = dict(zip(COLUMNS, rec.history()[-1].tolist()))
    W = 0.5 + 0.75  # mean(E1 - E0) summed
    Q = 0.5 - 2.5  # mean E0(1) - mean E1(0)
    dE_i = [(2 - 1) + (0.5 - 0) + (0 - 2), (3 - 3) + (2 - 1) + (1 - 3)]  # per batch position
    dF = -math.log(sum(math.exp(-d) for d in dE_i) / 2)
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
