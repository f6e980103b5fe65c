"""Per-chain traces and long-run chains in a training run: logged, plotted, and without effect on training."""
import glob
import json
import os

import torch

from conftest import TINY, run_script


def test_long_run_chains_are_reported_and_leave_training_unchanged(tmp_path, fmnist_root, fmnist_centers):
    common = ["--data_root", fmnist_root, "--center_dir", fmnist_centers, *TINY, "--n_steps", "3", "--n_epochs", "1"]
    plain, probed = str(tmp_path / "plain"), str(tmp_path / "probed")
    run_script("train_maebm.py", *common, "--save_dir", plain, check=True)
    run_script("train_maebm.py", *common, "--save_dir", probed, "--long_run_every", "5", "--long_run_steps", "40",
               "--long_run_n", "8", check=True)
    rows = [json.loads(line) for line in open(os.path.join(probed, "metrics.jsonl"))]
    long_rows = [r for r in rows if "long_run/energy_last" in r]
    assert [r["iteration"] for r in long_rows] == [5, 10]
    chain_rows = [r for r in rows if "chain/energy_first" in r]
    assert len(chain_rows) == 10 and all(r["chain/grad_norm_first"] > 0 for r in chain_rows)
    # the chains climb f: their last step's energy lies below their first on average over the run
    assert sum(r["chain/energy_last"] < r["chain/energy_first"] for r in chain_rows) >= 8
    for it in (5, 10):
        for suffix in (".png", "_chains.png"):
            assert os.path.isfile(os.path.join(probed, "long_run", f"long_run_{it:08d}{suffix}"))
    assert len(glob.glob(os.path.join(probed, "samples", "chains_*.png"))) == 5  # with each sample grid
    weights = lambda run: torch.load(os.path.join(run, "last_ckpt.pt"), weights_only=False)["model_state_dict"]
    a, b = weights(plain), weights(probed)
    assert all(torch.equal(a[k], b[k]) for k in a)
