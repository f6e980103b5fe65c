"""Every launcher passes extra arguments through ("$@" last): run each for a few iterations on small data."""
import csv
import json
import glob
import os
import subprocess
import sys

import pytest

from conftest import ROOT, TINY, error_line, run_script
from utils.checkpoint import load_checkpoint

PATTERNS = ("ma*.sh", "sadajem_*.sh", "tutorial_*.sh", "shortrun_*.sh", "convergent_*.sh", "quality_*.sh")
LAUNCHERS = sorted(os.path.basename(p) for pattern in PATTERNS for p in glob.glob(os.path.join(ROOT, "scripts", pattern)))


# every script a user runs with bash; common.sh is sourced by them, setup_env.sh and run_tests.sh install first
USER_LAUNCHERS = sorted(n for n in os.listdir(os.path.join(ROOT, "scripts"))
                        if n.endswith(".sh") and n not in ("common.sh", "setup_env.sh", "run_tests.sh"))


@pytest.mark.parametrize("launcher", USER_LAUNCHERS)
def test_launcher_help_uses_the_venv_when_path_python_lacks_torch(launcher, tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in os.listdir(ROOT):
        if name not in (".venv", ".git"):
            (tree / name).symlink_to(os.path.join(ROOT, name))
    (tree / ".venv" / "bin").mkdir(parents=True)
    used = tmp_path / "venv_used"
    venv_python = tree / ".venv" / "bin" / "python"
    venv_python.write_text(f'#!/bin/sh\necho "$@" >> {used}\nexec {sys.executable} "$@"\n')
    bare = tmp_path / "bin"
    bare.mkdir()
    for name in ("python", "python3"):  # what a fresh machine's PATH has: an interpreter without torch
        (bare / name).write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'torch'\" >&2\nexit 1\n")
    for f in (venv_python, bare / "python", bare / "python3"):
        f.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "VENV")}
    env["PATH"] = f"{bare}:/usr/bin:/bin"
    proc = subprocess.run(["bash", str(tree / "scripts" / launcher), "--help"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout and "example:" in proc.stdout and "No module named" not in proc.stderr
    assert "--help" in used.read_text()


def test_launcher_fits_missing_gaussians_then_trains_in_experiment(tmp_path, fmnist_root):
    save, centers = tmp_path / "run", tmp_path / "centers"
    proc = run_script("scripts/quality_fashionmnist.sh", "--data_root", fmnist_root, "--center_dir", centers, *TINY,
                      "--max_iters", "2", "--n_steps", "1", "--n_valid", "0", "--save_dir", save, check=True)
    assert f"one_center.py --dataset fashionmnist --data_root {fmnist_root} --save_dir {centers} --per_class" \
        in proc.stdout
    assert (centers / "fashionmnist_mean_class.pt").is_file() and (save / "last_ckpt.pt").is_file()
    assert f"run directory: {save}" in proc.stdout


def test_launchers_share_one_convention():
    for name in USER_LAUNCHERS:
        text = open(os.path.join(ROOT, "scripts", name)).read()
        assert "source scripts/common.sh" in text and "${PYTHON:-python}" not in text, name
        assert "./experiment/" in text or name.startswith(("eval_", "quickstart")), name
        if "launch_training" in text:
            assert '--center_dir "$CENTER_DIR"' in text, name


def test_all_recipes_have_launchers():
    assert {"maebm_cifar10.sh", "majem_cifar10.sh", "maebm_celeba.sh", "maebm_fashionmnist.sh",
            "majem_fashionmnist.sh", "majem_mnist.sh", "tutorial_mnist.sh", "shortrun_fashionmnist.sh",
            "convergent_fashionmnist.sh", "sadajem_cifar10.sh", "quality_fashionmnist.sh"} <= set(LAUNCHERS)


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
    run = save / "K1_slr1_lr0.05_snon"
    fid = json.load(open(run / "eval_fid" / "fid.json"))
    clf = json.load(open(run / "eval_test_clf" / "test_clf.json"))
    assert float(r["fid"]) == pytest.approx(fid["fid"]) and float(r["kid"]) == pytest.approx(fid["kid_mean"])
    assert float(r["test_acc"]) == pytest.approx(clf["test_acc"]) and fid["fid"] > 0 and float(r["minutes"]) > 0
    assert (save / "sweep.png").is_file()
    assert load_checkpoint(str(save / "K1_slr1_lr0.05_snon" / "last_ckpt.pt"))["args"]["spectral_norm"]


def test_sweep_refuses_its_directory_and_resumes(tmp_path, fmnist_root, fmnist_centers):
    save = tmp_path / "sweep"
    common = ["--n_steps", "1", "--spectral_norm", "off", "--dataset", "fashionmnist", "--data_root", fmnist_root,
              "--center_dir", fmnist_centers, *TINY, "--max_iters", "2", "--save_dir", save]
    run_script("sweep.py", "--lr", "0.05", *common, check=True, process=True)
    assert "already holds a sweep" in error_line(run_script("sweep.py", "--lr", "0.05", *common))
    run_script("sweep.py", "--lr", "0.05", "0.1", *common, "--resume", check=True)
    rows = list(csv.DictReader(open(save / "sweep.csv")))
    assert [r["setting"] for r in rows] == ["K1_slr1_lr0.05_snoff", "K1_slr1_lr0.1_snoff"]
    assert all(r["status"] == "ok" and r["fid"] == "" for r in rows)


def test_sweep_refuses_a_mistyped_training_flag(tmp_path):
    proc = run_script("sweep.py", "--n_stepz", "3", "--save_dir", tmp_path / "s")
    assert "unrecognized arguments: --n_stepz" in error_line(proc)
    assert not (tmp_path / "s").exists()


# Parameter counts of the published nets, weights plus biases counted by hand. Tutorial CNN: convs 1->16 (5x5),
# 16->32, 32->64, 64->64 (3x3), a 2x2x64 -> 64 linear layer; conv5: 1->64->64->128->256->512 (3x3); each with
# a 10-class head and, for --uncond, a scalar energy head.
TUTORIAL_CNN = 16 * 25 + 16 + 32 * 16 * 9 + 32 + 64 * 32 * 9 + 64 + 64 * 64 * 9 + 64 + 256 * 64 + 64 + 64 * 10 + 10
CONV5 = 64 * 9 + 64 + 64 * 64 * 9 + 64 + 128 * 64 * 9 + 128 + 256 * 128 * 9 + 256 + 512 * 256 * 9 + 512 + 512 * 10 + 10


@pytest.mark.parametrize("launcher,model,params", [("tutorial_mnist.sh", "tutorial_cnn", TUTORIAL_CNN + 65),
                                                   ("shortrun_fashionmnist.sh", "conv5", CONV5 + 513),
                                                   ("convergent_fashionmnist.sh", "conv5", CONV5 + 513)])
def test_small_net_launchers_build_the_published_sizes(launcher, model, params, tmp_path, fmnist_root, fmnist_centers):
    """Run with the recipe's own network (only data and length overridden): 64 base filters, not WRN's width."""
    save = tmp_path / "run"
    run_script(f"scripts/{launcher}", "--dataset", "fashionmnist", "--data_root", fmnist_root, "--center_dir",
               fmnist_centers, "--max_iters", "1", "--n_steps", "1", "--batch_size", "16", "--buffer_size", "64",
               "--workers", "0", "--save_dir", save, check=True)
    ckpt = load_checkpoint(str(save / "last_ckpt.pt"))
    n_params = sum(v.numel() for v in ckpt["model_state_dict"].values())
    assert ckpt["args"]["model"] == model and ckpt["args"]["width"] == 1 and n_params == params


@pytest.mark.parametrize("extra,terms", [(["--objective", "dcl", "--pyx", "1"], {"loss/pyx"}),
                                         (["--pyx", "1", "--l2_coeff", "0"], {"loss/px", "loss/pyx"}),
                                         (["--pyx", "1"], {"loss/px", "loss/pyx"}),
                                         ([], {"loss/px"})])
def test_lightning_study_combinations_are_flag_settings(extra, terms, tmp_path, fmnist_root, fmnist_centers):
    """CrossEntropy / + Generation error / + Regularization, as in the README's recipe table (the generative-only
    recipe is the launcher itself, run above)."""
    save = tmp_path / "run"
    run_script("scripts/tutorial_mnist.sh", "--dataset", "fashionmnist", "--data_root", fmnist_root, "--center_dir",
               fmnist_centers, *TINY, "--max_iters", "2", "--n_steps", "1", "--save_dir", save, *extra, check=True)
    rows = [json.loads(line) for line in open(save / "metrics.jsonl")]
    logged = set().union(*(r.keys() for r in rows))
    assert {k for k in logged if k.startswith("loss/") and k != "loss/total"} == terms
    for r in (r for r in rows if "loss/px" in r):  # the p(x) term is the CD gap plus the l2 regulariser, if any
        gap = r["energy/f_samples"] - r["energy/f_data"]
        if "--l2_coeff" in extra:
            assert r["loss/px"] == pytest.approx(gap, abs=1e-5)
        else:
            assert r["loss/px"] > gap + 1e-6
