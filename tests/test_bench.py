"""bench/train_step.py runs on the CPU (small model) and reports a consistent table and JSON."""
import json

import pytest

from conftest import run_script


def test_bench_cpu_smoke(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_script("bench/train_step.py", "--device", "cpu", "--iters", "1", "--warmup", "0", "--batch_size", "8",
                      "--pyx_batch_size", "8", "--n_steps", "2", "--channels", "3", "--image_size", "32", "--compile",
                      "off", "--policies", "fp32", "bf16_all", "--peak_size", "256", "--out", out, check=True,
                      process=True)
    info = json.load(open(out))
    # on a CPU, by default: the quickstart CNN and WRN-16-2, each policy asked for, in one run
    assert [(r["net"], r["policy"], r["compile"]) for r in info["rows"]] == [
        ("cnn-1-1", "fp32", False), ("cnn-1-1", "bf16_all", False), ("wrn-16-2", "fp32", False),
        ("wrn-16-2", "bf16_all", False)]
    row, bf16 = info["rows"][0], info["rows"][1]
    assert info["device"] == "cpu" and all(r["ms_per_iter"] > 0 for r in info["rows"])
    assert bf16["flop_per_iter"] == row["flop_per_iter"]  # same work, another precision
    # the machine's peak is measured in the run, and the floor is the work at that peak of each part's dtype
    peak = info["peak_gflops"]
    assert set(peak) == {"gemm_fp32", "gemm_bf16", "conv_fp32", "conv_bf16"} and min(peak.values()) > 0
    assert row["floor_ms"] == pytest.approx(1000 * row["flop_per_iter"] / (peak["conv_fp32"] * 1e9))
    assert bf16["floor_ms"] == pytest.approx(1000 * bf16["flop_per_iter"] / (peak["conv_bf16"] * 1e9))
    assert row["floor_multiple"] == pytest.approx(row["ms_per_iter"] / row["floor_ms"])
    # the CPU default net (small CNN, 16 base filters, 3x32x32) counted by hand as 2 x multiply-adds per image:
    # convs 3->16 at 32x32, 16->32 at 16x16, 32->64 at 8x8, 64->64 at 4x4 (3x3), linear 1024->256, class head
    # 256->10 and M-JEM's energy head 256->1 (--uncond)
    by_hand = 2 * (16 * 3 * 9 * 32 * 32 + 32 * 16 * 9 * 16 * 16 + 64 * 32 * 9 * 8 * 8 + 64 * 64 * 9 * 4 * 4
                   + 1024 * 256 + 256 * 10 + 256)
    assert row["forward_flop_per_image"] == by_hand
    # forward FLOPs per image times (2 x K x p(x) batch + 3 x (2 x p(x) batch + labelled batch)) images
    assert row["flop_per_iter"] == row["forward_flop_per_image"] * (2 * 2 * 8 + 3 * (2 * 8 + 8))
    assert "x floor" in proc.stdout and "bf16_all" in proc.stdout


def test_bench_times_the_quickstarts_real_loop_with_a_breakdown(tmp_path, fmnist_root, fmnist_centers):
    out = tmp_path / "loop.json"
    run_script("bench/train_step.py", "--loop", "--iters", "3", "--warmup", "1", "--peak_size", "256",
               "--data_root", fmnist_root, "--center_dir", fmnist_centers, "--train_flags",
               "--n_valid 40 --buffer_size 100 --batch_size 16 --pyx_batch_size 32", "--out", out, check=True)
    info = json.load(open(out))
    row = info["rows"][0]
    assert row["net"] == "quickstart" and row["ms_per_iter"] > 0 and not row["compile"]
    # the floor of the quickstart's own batches (the flags override theirs): 2 x K x 16 + 3 x (2 x 16 + 32) images
    per_image = row["flop_per_iter"] / (2 * 5 * 16 + 3 * (2 * 16 + 32))
    assert per_image == int(per_image) and per_image > 1e6
    assert row["floor_ms"] == pytest.approx(1000 * row["flop_per_iter"] / (info["peak_gflops"]["conv_fp32"] * 1e9))
    parts = row["breakdown_percent"]
    assert {"step/data", "step/chains", "step/loss_forward", "step/backward", "step/optimizer"} <= set(parts)
    assert sum(parts.values()) == pytest.approx(100, abs=0.5) and parts["step/chains"] > parts["step/data"]


def test_inception_bench_reports_every_precision_and_layout(tmp_path, fmnist_root, fid_weights):
    out = tmp_path / "inception.json"
    common = ["--data_root", fmnist_root, "--n", "2", "--batch_size", "2", "--device", "cpu"]
    rows = {}
    for precision, layouts in (("exact", ["channels_last", "contiguous"]), ("bf16", ["channels_last"])):
        proc = run_script("bench/inception.py", *common, "--precisions", precision, "--layouts", *layouts, "--out", out,
                          check=True, process=precision == "exact")
        rows.update({(r["precision"], r["layout"]): r for r in json.load(open(out))["rows"]})
    assert set(rows) == {("exact", "channels_last"), ("exact", "contiguous"), ("bf16", "channels_last")}
    # the two layouts give the same features in fp32; bf16 is close, not equal
    exact, plain = rows["exact", "channels_last"], rows["exact", "contiguous"]
    assert abs(exact["fid_train_vs_test"] - plain["fid_train_vs_test"]) < 1e-3 * exact["fid_train_vs_test"]
    assert rows["bf16", "channels_last"]["fid_train_vs_test"] != exact["fid_train_vs_test"]
    assert all(r["images_per_s"] > 0 and r["fid_test_vs_noisy_test"] > 0 for r in rows.values())
    assert "images/s" in proc.stdout
