"""bench/gpu_check.py at toy sizes on the CPU, so the one command a GPU machine runs cannot rot."""
import json
import os

import numpy as np

from conftest import run_script


def test_gpu_check_smoke_writes_every_part(tmp_path):
    out = tmp_path / "check"
    proc = run_script("bench/gpu_check.py", "--smoke", "--device", "cpu", "--out", out, check=True, process=True)
    report = json.load(open(out / "gpu_check.json"))
    parts = report["parts"]
    assert list(parts) == ["1 cuda tests", "2 published M-JEM iteration timed", "3 fp32 against the fast path",
                           "4 SIGKILL and resume", "5 exact FID features against the CPU's"]
    assert all(p["status"] == "ok" for p in parts.values()), parts
    assert "passed" in parts["1 cuda tests"]["pytest"]
    timed = parts["2 published M-JEM iteration timed"]
    assert timed["cnn-1-1 fp32"]["ms_per_iter"] > 0 and timed["cnn-1-1 bf16_all"]["floor_multiple"] > 0
    assert set(timed["peak_gflops"]) == {"gemm_fp32", "gemm_bf16", "conv_fp32", "conv_bf16"}
    compare = parts["3 fp32 against the fast path"]
    assert "verdict" in compare and compare["fp32"]["test_acc"] is not None
    for name in ("fp32", "fast"):
        samples = np.load(out / f"samples_{name}.npz")["samples"]
        assert samples.shape == (64, 1, 28, 28) and samples.dtype == np.float16
        assert os.path.getsize(out / f"samples_{name}.npz") < 16 * 2 ** 20
    resumed = parts["4 SIGKILL and resume"]
    assert resumed["final_iterations"] == [8, 8] and resumed["bit_identical"]  # on the CPU: exactly the same run
    assert "## 4 SIGKILL and resume: ok" in open(out / "gpu_check.md").read() and "report:" in proc.stdout
    assert parts["5 exact FID features against the CPU's"]["relative_difference"] == 0  # CPU against CPU


def test_fid_of_samples_scores_an_npz(tmp_path, fmnist_root, fid_weights):
    x = np.random.default_rng(0).uniform(-1, 1, size=(20, 1, 28, 28)).astype(np.float16)
    np.savez_compressed(tmp_path / "s.npz", samples=x)
    proc = run_script("bench/fid_of_samples.py", tmp_path / "s.npz", "--data_root", fmnist_root, "--fid_ref_n", "30",
                      "--fid_stats_dir", tmp_path / "stats", check=True, process=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["n_samples"] == 20 and result["fid"] > 100  # uniform noise is far from the data
