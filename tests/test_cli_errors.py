"""Bad input: one clear line on stderr, a non-zero exit, no traceback, nothing written or changed.

The scripts' main() runs in-process (through the same run_cli wrapper as the command line) to keep the
table fast; an unexpected exception would fail the test just as a traceback would.
"""
import hashlib
import os

import numpy as np
import pytest
import torch

import one_center
import train_maebm
from conftest import TINY, call_script, run_script
from utils.errors import run_cli


def snapshot(path):
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            out[p] = hashlib.md5(open(p, "rb").read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def existing_run(tmp_path_factory, fmnist_root, fmnist_centers):
    save = str(tmp_path_factory.mktemp("existing") / "run")
    run_script("train_maebm.py", "--data_root", fmnist_root, "--center_dir", fmnist_centers, "--save_dir", save,
               *TINY, "--max_iters", "2", check=True)
    return save


CASES = [
    # (name, script, args builder, expected text in the message)
    ("unknown flag", "train_maebm.py", lambda c: ["--no_such_flag"], "unrecognized arguments"),
    ("abbreviated flag", "train_maebm.py", lambda c: ["--n_ste", "3"], "unrecognized arguments"),
    ("ill-typed int", "train_maebm.py", lambda c: ["--n_steps", "five"], "--n_steps"),
    ("zero steps", "train_maebm.py", lambda c: ["--n_steps", "0"], "positive integer"),
    ("negative batch", "train_maebm.py", lambda c: ["--batch_size", "-4"], "--batch_size"),
    ("zero buffer", "train_maebm.py", lambda c: ["--buffer_size", "0"], "--buffer_size"),
    ("reinit above 1", "train_maebm.py", lambda c: ["--reinit_freq", "1.5"], "--reinit_freq"),
    ("negative sgld noise", "train_maebm.py", lambda c: ["--sgld_std", "-1"], "--sgld_std"),
    ("unknown dataset", "train_maebm.py", lambda c: ["--dataset", "imagenet21k"], "--dataset"),
    ("unknown norm", "train_maebm.py", lambda c: ["--norm", "group"], "--norm"),
    ("bad wrn depth", "train_maebm.py", lambda c: ["--model", "wrn", "--depth", "12"], "6n+4"),
    ("missing data root", "train_maebm.py", lambda c: ["--data_root", c["empty"], "--dataset", "cifar10"], "--data_root"),
    ("missing gaussian", "train_maebm.py", lambda c: ["--center_dir", c["empty"]], "one_center.py --dataset fashionmnist"),
    ("wrong-shape gaussian", "train_maebm.py", lambda c: ["--center_dir", c["wrong_shape"]], "expected a mean of 784"),
    ("non-PSD gaussian", "train_maebm.py", lambda c: ["--center_dir", c["non_psd"]], "not positive definite"),
    ("NaN gaussian", "train_maebm.py", lambda c: ["--center_dir", c["nan"]], "NaN"),
    ("buffer not divisible", "train_maebm.py", lambda c: ["--class_cond_p_x_sample", "--buffer_size", "105"], "divisible"),
    ("class cond with uncond", "train_maebm.py", lambda c: ["--class_cond_p_x_sample", "--uncond"], "--uncond"),
    ("nothing to train", "train_maebm.py", lambda c: ["--px", "0", "--pyx", "0"], "nothing to train"),
    ("dcl without labels", "train_maebm.py", lambda c: ["--objective", "dcl", "--pyx", "0"], "--pyx is 0"),
    ("j_ebm with uncond", "train_maebm.py", lambda c: ["--objective", "j_ebm", "--uncond"], "cannot be used with --uncond"),
    ("gcl with uncond", "train_maebm.py", lambda c: ["--objective", "gcl", "--uncond"], "cannot be used with --uncond"),
    ("retired jem objective", "train_maebm.py", lambda c: ["--objective", "jem"], "JEM is --objective maebm"),
    ("unknown download mode", "train_maebm.py", lambda c: ["--download", "always"], "--download"),
    ("wandb project empty", "train_maebm.py", lambda c: ["--wandb", ""], "--wandb"),
    ("negative warm-up", "train_maebm.py", lambda c: ["--warmup_iters", "-5"], "--warmup_iters"),
    ("negative labels per class", "train_maebm.py", lambda c: ["--labels_per_class", "-3"], "--labels_per_class"),
    ("existing run dir", "train_maebm.py", lambda c: ["--save_dir", c["existing"]], "already holds a run"),
    ("unwritable save dir", "train_maebm.py", lambda c: ["--save_dir", "/proc/forbidden/run"], "--save_dir"),
    ("n_valid too large", "train_maebm.py", lambda c: ["--n_valid", "100000"], "--n_valid"),
    ("missing load_path", "train_maebm.py", lambda c: ["--load_path", c["empty"] + "/nope.pt"], "not found"),
    ("corrupt load_path", "train_maebm.py", lambda c: ["--load_path", c["corrupt"]], "corrupt"),
    ("other-architecture load_path", "train_maebm.py",
     lambda c: ["--load_path", c["existing"] + "/last_ckpt.pt", "--width", "2"], "does not match"),
    ("resume of a non-run", "train_maebm.py", lambda c: ["--resume", c["empty"]], "no loadable checkpoint"),
    ("one_center unknown dataset", "one_center.py", lambda c: ["--dataset", "nope"], "--dataset"),
    ("one_center missing data", "one_center.py", lambda c: ["--data_root", c["empty"], "--dataset", "svhn"], "--data_root"),
    ("one_center zero batch", "one_center.py", lambda c: ["--batch_size", "0"], "--batch_size"),
]


@pytest.fixture(scope="module")
def case_files(tmp_path_factory, existing_run):
    tmp = tmp_path_factory.mktemp("cases")
    (tmp / "empty").mkdir()
    corrupt = tmp / "corrupt.pt"
    corrupt.write_bytes(open(os.path.join(existing_run, "last_ckpt.pt"), "rb").read()[:5000])
    files = {"empty": str(tmp / "empty"), "existing": existing_run, "corrupt": str(corrupt)}
    for name, mean, cov in (("wrong_shape", torch.zeros(10), torch.eye(10)),
                            ("non_psd", torch.zeros(784), -torch.eye(784)),
                            ("nan", torch.full((784,), float("nan")), torch.eye(784))):
        d = tmp / name
        d.mkdir()
        torch.save(mean, d / "fashionmnist_mean_one.pt")
        torch.save(cov, d / "fashionmnist_cov_one.pt")
        files[name] = str(d)
    return files


@pytest.mark.parametrize("name,script,build,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input(name, script, build, expected, case_files, fmnist_root, fmnist_centers, tmp_path, capsys):
    save = str(tmp_path / "new_run")
    base = ["--data_root", fmnist_root]
    if script == "train_maebm.py":
        base += ["--center_dir", fmnist_centers, "--save_dir", save, *TINY, "--max_iters", "1"]
    else:
        base += ["--save_dir", str(tmp_path / "centers")]
    before = snapshot(case_files["existing"])
    main = {"train_maebm.py": train_maebm.main, "one_center.py": one_center.main}[script]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, [str(a) for a in base + build(case_files)])
    assert exit_info.value.code not in (0, None)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert expected in lines[0], lines[0]
    assert snapshot(case_files["existing"]) == before
    assert not os.path.exists(save) and not os.path.exists(tmp_path / "centers")  # nothing at all was written


BENCH_CASES = [
    # (name, script, args builder, expected text in the message); every case also gets --out (where the script has one)
    ("samples file missing", "bench/fid_of_samples.py", lambda c: [c["empty"] + "/none.npz"], "none.npz: not found"),
    ("samples file not an npz", "bench/fid_of_samples.py", lambda c: [c["corrupt"]], "not a readable .npz"),
    ("samples under another key", "bench/fid_of_samples.py", lambda c: [c["no_key"]], "no array 'samples'"),
    ("samples of another shape", "bench/fid_of_samples.py", lambda c: [c["rgb"]], "expected (N >= 2, 1, 28, 28)"),
    ("one sample", "bench/fid_of_samples.py", lambda c: [c["one"]], "has shape (1, 1, 28, 28)"),
    ("NaN samples", "bench/fid_of_samples.py", lambda c: [c["nan_npz"]], "NaN"),
    ("reference of one image", "bench/fid_of_samples.py", lambda c: [c["one"], "--fid_ref_n", "1"], "--fid_ref_n"),
    ("inception set of one", "bench/inception.py", lambda c: ["--n", "1"], "--n"),
    ("inception zero batch", "bench/inception.py", lambda c: ["--batch_size", "0"], "--batch_size"),
    ("inception unknown device", "bench/inception.py", lambda c: ["--device", "tpu"], "--device"),
    ("gpu check zero iterations", "bench/gpu_check.py", lambda c: ["--iters", "0"], "--iters"),
    ("train step malformed net", "bench/train_step.py", lambda c: ["--nets", "cnn-x"], "--nets"),
    ("train step zero iterations", "bench/train_step.py", lambda c: ["--iters", "0"], "--iters"),
    ("quality one new chain", "bench/quality.py", lambda c: ["--n_fresh", "1"], "--n_fresh"),
    ("quality negative seed", "bench/quality.py", lambda c: ["--seeds", "-1"], "--seeds"),
    ("quality buffer ratio of 1", "bench/quality.py", lambda c: ["--buffer_ratio", "1"], "--buffer_ratio"),
    ("quality run without checkpoint", "bench/quality.py", lambda c: ["--score_runs", "a=" + c["empty"]], "--score_runs"),
    ("precision without fp32", "bench/precision.py", lambda c: ["--policies", "bf16_all"], "fp32"),
    ("precision reference of one", "bench/precision.py", lambda c: ["--fid_ref_n", "1"], "--fid_ref_n"),
    ("mutants zero jobs", "bench/mutants.py", lambda c: ["--jobs", "0"], "--jobs"),
    ("mutants unknown break", "bench/mutants.py", lambda c: ["--only", "no_such_break"], "unknown break"),
]


@pytest.fixture(scope="module")
def bench_files(case_files, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench_cases")
    images = np.zeros((4, 1, 28, 28), np.float16)
    for name, arrays in (("no_key", {"x": images}), ("rgb", {"samples": np.zeros((4, 3, 32, 32), np.float16)}),
                         ("one", {"samples": images[:1]}), ("nan_npz", {"samples": images + np.nan})):
        np.savez(tmp / f"{name}.npz", **arrays)
    return {**case_files, **{name: str(tmp / f"{name}.npz") for name in ("no_key", "rgb", "one", "nan_npz")}}


@pytest.mark.parametrize("name,script,build,expected", BENCH_CASES, ids=[c[0] for c in BENCH_CASES])
def test_bench_bad_input(name, script, build, expected, bench_files, fmnist_root, tmp_path):
    out = tmp_path / "out"
    extra = [] if script in ("bench/fid_of_samples.py", "bench/mutants.py") else ["--out", str(out)]
    if script != "bench/mutants.py":
        extra += ["--data_root", fmnist_root]
    proc = call_script(script, *build(bench_files), *extra)
    assert proc.returncode not in (0, None)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert expected in lines[0], lines[0]
    assert not out.exists()
