"""Fidelity to the published M-EBM code (github.com/sndnyang/mebm): its command lines, launcher values, epoch
length and lr schedule, checkpoint format, and eval procedures."""
import glob
import json
import os
import shlex
import subprocess
import sys

from PIL import Image
from conftest import ROOT, TINY, call_script, run_script, write_fashion_mnist
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from eval_maebm import build_parser as eval_parser
from models import build_model
import train_maebm
import train_maebm_celeba
from utils.checkpoint import load_checkpoint
from utils.evaluation.classifier import mode_test_clf
from utils.evaluation.context import Evaluation, checkpoint_model, load_model
from utils.upstream import from_upstream_state_dict

# Every command line of upstream's readme.md and scripts/*.sh (commented-out ones included), verbatim.
UPSTREAM_COMMANDS = [
    ("readme", "python one_center.py --dataset cifar10"),
    ("readme M-EBM", "python train_maebm.py --dataset cifar10 --lr .1 --optimizer sgd --px 1.0 --pyx 1.0 "
     "--data_root ../../data --sigma .0 --width 10 --depth 28 --plot_uncond --warmup_iters 1000 --model wrn "
     "--norm batch --print_every 100 --n_epochs 200 --decay_epochs 60 120 180 --n_steps 5 --sgld_lr 1 "
     "--sgld_std 0.0 --no_fid --no_wandb --l2_coeff 0.5 --uncond --gpu-id 3"),
    ("readme M-JEM", "python train_maebm.py --dataset cifar10 --lr .1 --optimizer sgd --px 1.0 --pyx 1.0 --sigma .0 "
     "--width 10 --depth 28 --plot_uncond --warmup_iters 1000 --model wrn --norm batch --print_every 100 "
     "--n_epochs 200 --decay_epochs 60 120 180 --n_steps 5 --sgld_lr 1 --sgld_std 0.0 --l2_coeff 0.5 --uncond "
     "--gpu-id 0"),
    ("maebm_cifar10.sh", "python train_maebm.py --dataset cifar10 --lr .1 --optimizer sgd --px 1.0 --pyx 0.0 "
     "--sigma .0 --width 10 --depth 28 --plot_uncond --warmup_iters 1000 --model wrn --norm batch --print_every 100 "
     "--n_epochs 200 --decay_epochs 60 120 180 --n_steps 2 --sgld_lr 1 --sgld_std 0.0 --l2_coeff 0.1 --uncond "
     "--gpu-id 6"),
    ("majem_cifar10.sh", "python train_maebm.py --dataset cifar10 --lr .1 --optimizer sgd --px 1.0 --pyx 1.0 "
     "--sigma .0 --width 10 --depth 28 --plot_uncond --warmup_iters 1000 --model wrn --norm batch --print_every 100 "
     "--n_epochs 200 --decay_epochs 60 120 180 --n_steps 5 --sgld_lr 1 --sgld_std 0.001 --l2_coeff 0.5 --uncond "
     "--gpu-id 0"),
    ("readme fid", "python eval_maebm.py --eval fid --uncond --load_path /PATH/TO/YOUR/MODEL.pt --ratio 0.9"),
    ("readme gen", "python eval_maebm.py --eval gen --buffer_size 100 --batch_size 100 --n_sample_steps 400 --uncond "
     "--n_steps 1 --print_every 10 --load_path $1"),
    ("eval_all_in_one.sh", "python eval_maebm.py --eval test_clf --uncond --load_path  $1"),
    ("eval_all_in_one.sh", "python eval_maebm.py --eval fid --uncond --load_path  $1  --ratio 0.9"),
    ("eval_all_in_one.sh", "python eval_maebm.py --eval quality --uncond --load_path $1"),
    ("eval_all_in_one.sh", "python eval_maebm.py --eval tsne --uncond --load_path  $1"),
    ("eval_all_in_one.sh", "python eval_maebm.py --eval gen --buffer_size 100 --batch_size 100 --n_sample_steps 1000  "
     "--uncond --n_steps 1 --print_every 10 --load_path $1"),
    ("eval_ebm.sh", "python eval_maebm.py --eval test_clf --load_path $1"),
    ("eval_ebm.sh", "python eval_maebm.py --eval fid --load_path $1 --ratio 0.9"),
    ("eval_ebm.sh", "python eval_maebm.py --eval gen --buffer_size 100 --batch_size 100 --n_sample_steps 1000  "
     "--uncond --n_steps 1 --print_every 10 --load_path $1"),
]
CELEBA_COMMAND = ("python train_maebm_celeba.py --dataset=celeba128 --data_root celeba/data128x128/ --lr=.02 "
                  "--optimizer=sgd --px=1.0 --width=2 --depth=28 --warmup_iters=1000 --model=wrn --norm batch "
                  "--print_every=100 --n_epochs=200 --decay_epochs 80 120 160 --n_steps=10 --sgld_lr=1 --sigma=.0 "
                  "--l2_coeff 0. --batch_size 64 --gpu-id=3")


def with_overrides(command, data_root, ckpt=None, iterations=2):
    """The command as argv with only the dataset (CIFAR-10 -> the test's Fashion-MNIST), data root, WRN size, batch
    size and iteration counts replaced: values are swapped in place, never flags added beyond --max_iters /
    --data_root."""
    tokens = shlex.split(command)
    script = tokens[1]
    out, i = [], 2
    while i < len(tokens):
        flag, value = (tokens[i].split("=", 1) + [None])[:2]
        takes_value = value is None and i + 1 < len(tokens) and not tokens[i + 1].startswith("--")
        if takes_value:
            value, i = tokens[i + 1], i + 1
        if flag == "--dataset" and value == "cifar10":
            value = "fashionmnist"
        elif flag == "--data_root":
            value = data_root
        elif flag == "--depth":
            value = "10"
        elif flag == "--width":
            value = "1"
        elif flag == "--batch_size":
            value = "16"
        elif flag == "--n_sample_steps":
            value = "3"
        elif flag == "--load_path":
            value = ckpt
        out += [flag] + ([] if value is None else [value])
        i += 1
    if script.startswith("train"):
        out += ["--max_iters", str(iterations)]
    if "--data_root" not in out:
        out += ["--data_root", data_root]
    return script, out


def run_in(cwd, script, argv, timeout=600, process=False):
    """The script run from `cwd` (where upstream's relative paths land), in this process unless `process`."""
    if process:
        proc = subprocess.run([sys.executable, os.path.join(ROOT, script), *argv], cwd=cwd, capture_output=True,
                              text=True, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    else:
        proc = call_script(script, *argv, cwd=cwd)
    assert proc.returncode == 0, f"{script} {argv} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def eval_ckpt(tmp_path_factory, fmnist_root, fmnist_centers):
    """The model that upstream's eval lines read as $1: an --uncond M-EBM WRN with a 100-image buffer."""
    save = str(tmp_path_factory.mktemp("upstream_eval") / "run")
    run_script("train_maebm.py", "--data_root", fmnist_root, "--center_dir", fmnist_centers, "--save_dir", save,
               "--model", "wrn", "--depth", "10", "--width", "1", "--uncond", "--buffer_size", "100",
               "--batch_size", "16", "--pyx_batch_size", "32", "--max_iters", "4", "--n_steps", "2", check=True)
    return os.path.join(save, "last_ckpt.pt")


@pytest.fixture(scope="module")
def small_fmnist(tmp_path_factory):
    """A smaller Fashion-MNIST for upstream's eval lines: their FID reference is every training image."""
    return write_fashion_mnist(str(tmp_path_factory.mktemp("small_fmnist")), n_train=48, n_test=32)


@pytest.mark.slow
@pytest.mark.parametrize("source,command", UPSTREAM_COMMANDS, ids=[f"{i}-{s}" for i, (s, _) in enumerate(UPSTREAM_COMMANDS)])
def test_upstream_command_runs(source, command, tmp_path, fmnist_root, small_fmnist, fmnist_centers, eval_ckpt,
                               fid_weights):
    evaluating = shlex.split(command)[1] == "eval_maebm.py"
    script, argv = with_overrides(command, small_fmnist if evaluating else fmnist_root, eval_ckpt)
    if script.startswith("train"):  # run where one_center.py left the Gaussian, as upstream expects ('.')
        for name in ("fashionmnist_mean_one.pt", "fashionmnist_cov_one.pt"):
            os.link(os.path.join(fmnist_centers, name), tmp_path / name)
    run_in(tmp_path, script, argv, process=source == "readme M-EBM")  # one by the real command line
    if script == "one_center.py":
        assert (tmp_path / "fashionmnist_mean_one.pt").is_file() and (tmp_path / "fashionmnist_cov_one.pt").is_file()
    elif script.startswith("train"):
        run, = glob.glob(str(tmp_path / "experiment" / "fashionmnist_*"))
        ckpt = load_checkpoint(os.path.join(run, "last_ckpt.pt"))
        assert ckpt["iteration"] == 2 and ckpt["args"]["uncond"] == ("--uncond" in argv)
        for flag in ("--n_steps", "--l2_coeff", "--sgld_std", "--pyx", "--lr", "--warmup_iters"):
            assert ckpt["args"][flag[2:]] == pytest.approx(float(argv[argv.index(flag) + 1]))
        assert len(ckpt["replay_buffer"]) == 10000
    else:
        mode = argv[argv.index("--eval") + 1]
        result = json.load(open(os.path.join(os.path.dirname(eval_ckpt), f"eval_{mode}", f"{mode}.json")))
        if mode == "test_clf":
            assert result["n"] == 32 and result["test_acc"] >= 0.1
        if mode in ("fid", "gen"):
            assert result["fid"] > 0
        if mode == "gen":
            assert result["n_samples"] == 100 and result["steps_per_round"] == 1 and result["rounds"] == 3


def write_celeba(root, n=64, size=128):
    """Upstream's CelebA layout: ROOT/train/<any folder>/<images>, no test split."""
    rng = np.random.default_rng(0)
    folder = os.path.join(root, "train", "faces")
    os.makedirs(folder)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(os.path.join(folder, f"{i}.jpg"))


@pytest.mark.slow
def test_upstream_celeba_command_runs(tmp_path):
    root = str(tmp_path / "celeba" / "data128x128")
    write_celeba(root)
    run_in(tmp_path, "one_center.py", ["--dataset", "celeba128", "--data_root", root])
    script, argv = with_overrides(CELEBA_COMMAND, root, iterations=1)
    run_in(tmp_path, script, [*argv, "--buffer_size", "200"], process=True)  # a 10,000-image 128-pixel buffer is 2 GB
    run, = glob.glob(str(tmp_path / "experiment" / "celeba128_*"))
    ckpt = load_checkpoint(os.path.join(run, "last_ckpt.pt"))
    assert ckpt["iteration"] == 1 and ckpt["args"]["pyx"] == 0 and ckpt["args"]["n_steps"] == 10
    assert ckpt["replay_buffer"].shape == (200, 3, 128, 128)
    assert any(k.startswith("f.layers.3.") for k in ckpt["model_state_dict"])  # the fourth WRN stage (n=1)


PUBLISHED = {
    "maebm_cifar10.sh": dict(dataset="cifar10", lr=0.1, optimizer="sgd", px=1.0, pyx=0.0, sigma=0.0, width=10,
                             depth=28, plot_uncond=True, warmup_iters=1000, model="wrn", norm="batch",
                             print_every=100, n_epochs=200, decay_epochs=[60, 120, 180], n_steps=2, sgld_lr=1.0,
                             sgld_std=0.0, l2_coeff=0.1, uncond=True, batch_size=64, amp="off", channels_last="off"),
    "majem_cifar10.sh": dict(dataset="cifar10", lr=0.1, optimizer="sgd", px=1.0, pyx=1.0, sigma=0.0, width=10,
                             depth=28, plot_uncond=True, warmup_iters=1000, model="wrn", norm="batch",
                             print_every=100, n_epochs=200, decay_epochs=[60, 120, 180], n_steps=5, sgld_lr=1.0,
                             sgld_std=0.001, l2_coeff=0.5, uncond=True, batch_size=64, amp="off", channels_last="off"),
    # SADA-JEM (the M-EBM authors' follow-up): its scripts/sadajem_cifar10.sh with train_sadajem.py's defaults
    "sadajem_cifar10.sh": dict(dataset="cifar10", lr=0.1, optimizer="sam", rho=2.0, sam_adaptive="auto",
                               weight_decay=5e-4, px=1.0, pyx=1.0, sigma=0.0, width=10, depth=28, plot_uncond=True,
                               warmup_iters=1000, model="wrn", norm="batch", print_every=100, n_epochs=200,
                               decay_epochs=[60, 120, 180], n_steps=5, sgld_lr=1.0, sgld_std=0.0, l2_coeff=0.0,
                               uncond=False, batch_size=64, buffer_size=10000, reinit_freq=0.05, init="gm_class"),
    "maebm_celeba.sh": dict(dataset="celeba128", lr=0.02, optimizer="sgd", px=1.0, pyx=0.0, width=2, depth=28,
                            warmup_iters=1000, model="wrn", norm="batch", print_every=100, n_epochs=200,
                            decay_epochs=[80, 120, 160], n_steps=10, sgld_lr=1.0, sgld_std=0.0, sigma=0.0,
                            l2_coeff=0.0, batch_size=64, uncond=False, plot_uncond=False),
}


@pytest.mark.parametrize("launcher", sorted(PUBLISHED))
def test_launcher_passes_the_published_values(launcher, tmp_path):
    stub = tmp_path / "python"
    stub.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'import json, sys; print(json.dumps(sys.argv[1:]))' \"$@\"\n")
    stub.chmod(0o755)
    proc = run_script(f"scripts/{launcher}", env={"PYTHON": str(stub)}, check=True)
    script, *argv = json.loads(proc.stdout.strip().splitlines()[-1])  # the training command, after any Gaussian fit
    parser = train_maebm_celeba.build_parser() if script == "train_maebm_celeba.py" else train_maebm.build_parser()
    args = vars(parser.parse_args(argv))
    assert {k: args[k] for k in PUBLISHED[launcher]} == PUBLISHED[launcher]


# JEM (github.com/wgrathwohl/JEM): its readme's training command, verbatim, and the defaults of train_wrn_ebm.py's
# parser that the command leaves in force, in this project's flag names
JEM_COMMAND = ("python train_wrn_ebm.py --lr .0001 --dataset cifar10 --optimizer adam --p_x_weight 1.0 "
               "--p_y_given_x_weight 1.0 --p_x_y_weight 0.0 --sigma .03 --width 10 --depth 28 --save_dir /YOUR/SAVE/DIR "
               "--plot_uncond --warmup_iters 1000")
JEM_FLAG_NAMES = {"--p_x_weight": "--px", "--p_y_given_x_weight": "--pyx"}
JEM_DEFAULTS = dict(n_steps=20, sgld_lr=1.0, sgld_std=0.01, buffer_size=10000, reinit_freq=0.05, batch_size=64,
                    pyx_batch_size=64, n_epochs=200, decay_epochs=[160, 180], decay_rate=0.3, weight_decay=0.0,
                    norm="none", dropout_rate=0.0, n_valid=5000, print_every=100, uncond=False, model="wrn",
                    # its sample_q from uniform noise, and its loss: no energy regulariser
                    sampler="jem", init="u", l2_coeff=0.0, objective="maebm")


def jem_command_as_flags():
    """JEM_COMMAND's values in this project's flags: renamed, the run directory and the zero joint weight left out."""
    tokens, argv = shlex.split(JEM_COMMAND)[2:], []
    for flag, value in zip(tokens, tokens[1:] + [None]):
        if not flag.startswith("--") or flag == "--save_dir":
            continue
        if flag == "--p_x_y_weight":
            assert float(value) == 0  # JEM's p(x, y) term, off in the published command
            continue
        argv += [JEM_FLAG_NAMES.get(flag, flag)] + ([value] if value and not value.startswith("--") else [])
    return argv


def test_jem_launcher_runs_jems_published_command(tmp_path):
    stub = tmp_path / "python"
    stub.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'import json, sys; print(json.dumps(sys.argv[1:]))' \"$@\"\n")
    stub.chmod(0o755)
    proc = run_script("scripts/jem_cifar10.sh", env={"PYTHON": str(stub)}, check=True)
    script, *argv = json.loads(proc.stdout.strip().splitlines()[-1])
    launched = vars(train_maebm.build_parser().parse_args(argv))
    published = {**vars(train_maebm.build_parser().parse_args(jem_command_as_flags())), **JEM_DEFAULTS}
    named = {flag[2:] for flag in jem_command_as_flags() if flag.startswith("--")} | set(JEM_DEFAULTS)
    assert script == "train_maebm.py" and {"lr", "optimizer", "px", "pyx", "sigma", "warmup_iters", "plot_uncond"} <= named
    assert {k: launched[k] for k in named} == {k: published[k] for k in named}


def upstream_lr_trace(n_epochs, iters_per_epoch, lr, warmup_iters, decay_epochs, decay_rate):
    """Upstream's train_maebm.py schedule, as its loop sets the optimiser's lr (decay at epoch start, warm-up
    overriding while cur_iter <= warmup_iters)."""
    group_lr, cur, trace = lr, 0, []
    for epoch in range(n_epochs):
        if epoch in decay_epochs:
            group_lr *= decay_rate
        for _ in range(iters_per_epoch):
            if cur <= warmup_iters:
                group_lr = lr * cur / float(warmup_iters)
            trace.append((epoch, group_lr))
            cur += 1
    return trace


@pytest.mark.parametrize("pyx", ["0", "1"])
def test_epoch_length_and_lr_schedule_are_upstreams(pyx, tmp_path, fmnist_root, fmnist_centers):
    save = tmp_path / "run"
    run_script("train_maebm.py", "--data_root", fmnist_root, "--center_dir", fmnist_centers, "--save_dir", save,
               *TINY, "--warmup_iters", "5", "--n_epochs", "3", "--decay_epochs", "1", "2", "--decay_rate", "0.5",
               "--n_steps", "1", "--pyx", pyx, *(["--uncond"] if pyx == "0" else []), check=True)
    rows = [json.loads(line) for line in open(save / "metrics.jsonl")]
    rows = [r for r in rows if "loss/total" in r]
    # 320 images: 10 labelled batches of 32 per epoch whatever --pyx is (the p(x) loader has 20 batches of 16)
    expected = upstream_lr_trace(3, 320 // 32, 0.1, 5, [1, 2], 0.5)
    assert [(r["epoch"], r["lr"]) for r in rows] == [(e, pytest.approx(lr)) for e, lr in expected]


class UpstreamBlock(nn.Module):
    """upstream models/wideresnet.py wide_basic's parameter layout (shortcut inside an nn.Sequential)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin, momentum=0.9), nn.Conv2d(cin, cout, 3, padding=1)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout, momentum=0.9), nn.Conv2d(cout, cout, 3, stride=stride, padding=1)
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride)) if stride != 1 or cin != cout \
            else nn.Sequential()

    def forward(self, x):
        out = self.conv1(F.leaky_relu(self.bn1(x), 0.2))
        return self.conv2(F.leaky_relu(self.bn2(out), 0.2)) + self.shortcut(x)


class UpstreamWRN(nn.Module):
    def __init__(self, channels, k, n):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 16, 3, padding=1)
        widths, cin = [16 * k, 32 * k, 64 * k], 16
        for s, (w, stride) in enumerate(zip(widths, (1, 2, 2)), 1):
            setattr(self, f"layer{s}", nn.Sequential(*[UpstreamBlock(cin if j == 0 else w, w, stride if j == 0 else 1)
                                                       for j in range(n)]))
            cin = w
        self.bn1 = nn.BatchNorm2d(cin, momentum=0.9)

    def forward(self, x):
        out = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return F.adaptive_avg_pool2d(F.leaky_relu(self.bn1(out), 0.2), 1).flatten(1)


class UpstreamF(nn.Module):
    """upstream models/jem_models.py F: both heads exist in every checkpoint, CCF included."""

    def __init__(self, channels=1, k=1, n=1, n_classes=10):
        super().__init__()
        self.f = UpstreamWRN(channels, k, n)
        self.energy_output, self.class_output = nn.Linear(64 * k, 1), nn.Linear(64 * k, n_classes)


@pytest.fixture(scope="module")
def upstream_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    net = UpstreamF(k=1, n=2)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):  # statistics a trained model would have, not the identity defaults
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    path = str(tmp_path_factory.mktemp("upstream_ckpt") / "best_valid_ckpt.pt")
    torch.save({"model_state_dict": net.state_dict(), "replay_buffer": torch.rand(100, 1, 28, 28) * 2 - 1}, path)
    return net.eval(), path


def test_upstream_weights_give_the_same_outputs(upstream_ckpt):
    net, path = upstream_ckpt
    state = torch.load(path, weights_only=True)["model_state_dict"]
    x = torch.rand(8, 1, 28, 28) * 2 - 1
    for uncond in (True, False):
        ours = build_model("wrn", 10, 1, depth=16, width=1, uncond=uncond, image_size=28)
        ours.load_state_dict(from_upstream_state_dict(state, uncond))
        f, logits = ours.eval()(x)
        with torch.no_grad():
            h = net.f(x)
            ref_logits = net.class_output(h)
            ref_f = net.energy_output(h).squeeze(1) if uncond else ref_logits.logsumexp(1)
        assert torch.allclose(logits, ref_logits, atol=1e-5) and torch.allclose(f, ref_f, atol=1e-5)


def test_eval_reads_an_upstream_checkpoint(upstream_ckpt, tmp_path, fmnist_root, fid_weights):
    net, path = upstream_ckpt
    common = ["--load_path", path, "--uncond", "--dataset", "fashionmnist", "--data_root", fmnist_root]
    run_script("eval_maebm.py", *common, "--eval", "test_clf", "--save_dir", tmp_path / "clf", check=True)
    result = json.load(open(tmp_path / "clf" / "test_clf.json"))
    from utils.data import image_transform, load_dataset
    test = load_dataset("fashionmnist", fmnist_root, False, image_transform("fashionmnist", False))
    x, y = map(torch.stack, zip(*[(img, torch.tensor(label)) for img, label in test]))
    with torch.no_grad():
        expected = (net.class_output(net.f(x)).argmax(1) == y).float().mean().item()
    assert result["n"] == 160 and result["test_acc"] == pytest.approx(expected)
    run_script("eval_maebm.py", *common, "--eval", "fid", "--ratio", "0.9", "--fid_ref_n", "40",
               "--fid_stats_dir", tmp_path / "stats", "--save_dir", tmp_path / "fid", check=True)
    result = json.load(open(tmp_path / "fid" / "fid.json"))
    assert result["fid"] > 0 and result["source"] == "replay buffer (100 images)" and 50 <= result["n_samples"] < 100


def test_training_continues_from_an_upstream_checkpoint(upstream_ckpt, tmp_path, fmnist_root, fmnist_centers):
    _, path = upstream_ckpt
    save = tmp_path / "run"
    run_script("train_maebm.py", "--load_path", path, "--data_root", fmnist_root, "--center_dir", fmnist_centers,
               "--save_dir", save, "--depth", "16", "--width", "1", "--uncond", "--buffer_size", "100",
               "--batch_size", "16", "--max_iters", "1", "--n_steps", "1", check=True)
    assert "loaded weights from" in open(save / "log.txt").read()
    first = load_checkpoint(str(save / "ckpt_iter_00000000.pt"))
    assert torch.equal(first["replay_buffer"], torch.load(path, weights_only=True)["replay_buffer"])
    proc = run_script("train_maebm.py", "--load_path", path, "--data_root", fmnist_root, "--center_dir",
                      fmnist_centers, "--save_dir", tmp_path / "bad", "--depth", "10", "--width", "1")
    assert proc.returncode == 2 and "depth=16 in the checkpoint vs 10 in the flags" in proc.stderr


def test_test_clf_refinement_leaves_batchnorm_statistics_alone(tmp_path, fmnist_root, fmnist_centers):
    save = tmp_path / "run"
    run_script("train_maebm.py", "--data_root", fmnist_root, "--center_dir", fmnist_centers, "--save_dir", save,
               *TINY, "--max_iters", "3", "--n_steps", "1", check=True)
    args = eval_parser().parse_args(["--load_path", str(save / "last_ckpt.pt"), "--eval", "test_clf", "--n_steps", "5"])
    ckpt = load_checkpoint(args.load_path, allow_upstream=True)
    arch, train_args = checkpoint_model(args, ckpt, args.load_path)
    model = load_model(ckpt, arch, train_args, args.load_path, torch.device("cpu"))
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    assert before
    result = mode_test_clf(Evaluation(args, ckpt, arch, train_args, model, torch.device("cpu")), str(tmp_path))
    assert result["refine_steps"] == 5
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
