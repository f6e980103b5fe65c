"""bench/train_step.py runs on the CPU (small model) and reports a consistent table and JSON."""
import json

from conftest import run_script


def test_bench_cpu_smoke(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_script("bench/train_step.py", "--device", "cpu", "--iters", "1", "--warmup", "0", "--sampler_batches",
                      "8", "--batch_size", "8", "--pyx_batch_size", "8", "--n_steps", "2", "--out", out, check=True,
                      process=True)
    info = json.load(open(out))
    # on a CPU, by default: the quickstart CNN and WRN-16-2, each fp32 against the chosen policy, in one run
    assert [(r["net"], r["variant"]) for r in info["rows"]] == [
        ("cnn-1-1", "fp32_eager"), ("cnn-1-1", "bf16_loss"), ("wrn-16-2", "fp32_eager"), ("wrn-16-2", "bf16_loss")]
    row = info["rows"][0]
    assert info["device"] == "cpu" and all(r["ms_per_iter"] > 0 for r in info["rows"])
    assert info["rows"][1]["flop_per_iter"] == row["flop_per_iter"]  # same work, another precision
    # the CPU default net (small CNN, 16 base filters, 3x32x32) counted by hand as 2 x multiply-adds per image:
    # convs 3->16 at 32x32, 16->32 at 16x16, 32->64 at 8x8, 64->64 at 4x4 (3x3), linear 1024->256, class head
    # 256->10 and M-JEM's energy head 256->1 (--uncond)
    by_hand = 2 * (16 * 3 * 9 * 32 * 32 + 32 * 16 * 9 * 16 * 16 + 64 * 32 * 9 * 8 * 8 + 64 * 64 * 9 * 4 * 4
                   + 1024 * 256 + 256 * 10 + 256)
    assert row["forward_flop_per_image"] == by_hand
    # forward FLOPs per image times (2 x K x p(x) batch + 3 x (2 x p(x) batch + labelled batch)) images
    assert row["flop_per_iter"] == row["forward_flop_per_image"] * (2 * 2 * 8 + 3 * (2 * 8 + 8))
    assert row["sgld_image_steps_per_s_bs8"] > 0 and "fp32_eager" in proc.stdout


def test_inception_bench_reports_every_precision_and_layout(tmp_path, fmnist_root, fid_weights):
    out = tmp_path / "inception.json"
    common = ["--data_root", fmnist_root, "--n", "4", "--batch_size", "4", "--device", "cpu"]
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
