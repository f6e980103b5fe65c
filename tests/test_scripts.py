"""Every launcher passes extra arguments through ("$@" last): run each for a few iterations on small data."""
import csv
import json
import glob
import os

import pytest

from conftest import ROOT, TINY, error_line, run_script
from utils.checkpoint import load_checkpoint

LAUNCHERS = sorted(os.path.basename(p) for pattern in ("ma*.sh", "tutorial_*.sh", "shortrun_*.sh", "convergent_*.sh")
                   for p in glob.glob(os.path.join(ROOT, "scripts", pattern)))


def test_all_recipes_have_launchers():
    assert {"maebm_cifar10.sh", "majem_cifar10.sh", "maebm_celeba.sh", "maebm_fashionmnist.sh",
            "majem_fashionmnist.sh", "majem_mnist.sh", "tutorial_mnist.sh", "shortrun_fashionmnist.sh",
            "convergent_fashionmnist.sh"} <= set(LAUNCHERS)


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_launcher_runs_with_overrides(launcher, tmp_path, fmnist_root, fmnist_centers):
    save = tmp_path / "run"
    run_script(f"scripts/{launcher}", "--dataset", "fashionmnist", "--data_root", fmnist_root, "--center_dir",
               fmnist_centers, *TINY, "--max_iters", "2", "--n_steps", "1", "--n_valid", "0", "--save_dir", save,
               check=True)
    ckpt = load_checkpoint(str(save / "last_ckpt.pt"))
    assert ckpt["iteration"] == 2 and ckpt["args"]["dataset"] == "fashionmnist" and ckpt["args"]["model"] == "cnn"
    recipe = open(os.path.join(ROOT, "scripts", launcher)).read()
    assert ckpt["args"]["uncond"] == ("--uncond" in recipe)


@pytest.mark.usefixtures("fid_weights")
def test_sweep_launcher_writes_table_and_figure(tmp_path, fmnist_root, fmnist_centers):
    save = tmp_path / "sweep"
    run_script("scripts/sweep_fashionmnist.sh", "--n_steps", "1", "--lr", "0.05", "--spectral_norm", "on",
               "--fid_ref_n", "40", "--data_root", fmnist_root, "--center_dir", fmnist_centers, *TINY,
               "--max_iters", "3", "--save_dir", save, check=True)
    rows = list(csv.DictReader(open(save / "sweep.csv")))
    assert [r["setting"] for r in rows] == ["K1_slr1_lr0.05_snon"]
    r = rows[0]
    assert r["status"] == "ok" and r["iterations"] == "3" and r["rollbacks"] == "0"
    assert float(r["fid"]) > 0 and float(r["kid"]) > -1 and 0 <= float(r["test_acc"]) <= 1 and float(r["minutes"]) > 0
    assert (save / "sweep.png").is_file()
    assert load_checkpoint(str(save / "K1_slr1_lr0.05_snon" / "last_ckpt.pt"))["args"]["spectral_norm"]


def test_sweep_refuses_its_directory_and_resumes(tmp_path, fmnist_root, fmnist_centers):
    save = tmp_path / "sweep"
    common = ["--n_steps", "1", "--spectral_norm", "off", "--dataset", "fashionmnist", "--data_root", fmnist_root,
              "--center_dir", fmnist_centers, *TINY, "--max_iters", "2", "--save_dir", save]
    run_script("sweep.py", "--lr", "0.05", *common, check=True)
    assert "already holds a sweep" in error_line(run_script("sweep.py", "--lr", "0.05", *common))
    run_script("sweep.py", "--lr", "0.05", "0.1", *common, "--resume", check=True)
    rows = list(csv.DictReader(open(save / "sweep.csv")))
    assert [r["setting"] for r in rows] == ["K1_slr1_lr0.05_snoff", "K1_slr1_lr0.1_snoff"]
    assert all(r["status"] == "ok" and r["fid"] == "" for r in rows)


def test_sweep_refuses_a_mistyped_training_flag(tmp_path):
    proc = run_script("sweep.py", "--n_stepz", "3", "--save_dir", tmp_path / "s")
    assert "unrecognized arguments: --n_stepz" in error_line(proc)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("launcher,model,max_params", [("tutorial_mnist.sh", "tutorial_cnn", 2e5),
                                                        ("shortrun_fashionmnist.sh", "conv5", 2e6),
                                                        ("convergent_fashionmnist.sh", "conv5", 2e6)])
def test_small_net_launchers_build_the_published_sizes(launcher, model, max_params, tmp_path, fmnist_root,
                                                       fmnist_centers):
    """Run with the recipe's own network (only data and length overridden): 64 base filters, not WRN's width."""
    save = tmp_path / "run"
    run_script(f"scripts/{launcher}", "--dataset", "fashionmnist", "--data_root", fmnist_root, "--center_dir",
               fmnist_centers, "--max_iters", "1", "--n_steps", "1", "--batch_size", "16", "--buffer_size", "64",
               "--workers", "0", "--save_dir", save, check=True)
    ckpt = load_checkpoint(str(save / "last_ckpt.pt"))
    n_params = sum(v.numel() for v in ckpt["model_state_dict"].values())
    assert ckpt["args"]["model"] == model and ckpt["args"]["width"] == 1 and n_params < max_params


@pytest.mark.parametrize("extra,terms", [(["--objective", "dcl", "--pyx", "1"], {"loss/pyx"}),
                                         (["--pyx", "1", "--l2_coeff", "0"], {"loss/px", "loss/pyx"}),
                                         (["--pyx", "1"], {"loss/px", "loss/pyx"})])
def test_lightning_study_combinations_are_flag_settings(extra, terms, tmp_path, fmnist_root, fmnist_centers):
    """CrossEntropy / + Generation error / + Regularization, as in the README's recipe table (the generative-only
    recipe is the launcher itself, run above)."""
    save = tmp_path / "run"
    run_script("scripts/tutorial_mnist.sh", "--dataset", "fashionmnist", "--data_root", fmnist_root, "--center_dir",
               fmnist_centers, *TINY, "--max_iters", "2", "--n_steps", "1", "--save_dir", save, *extra, check=True)
    logged = set().union(*(json.loads(line).keys() for line in open(save / "metrics.jsonl")))
    assert {k for k in logged if k.startswith("loss/") and k != "loss/total"} == terms
