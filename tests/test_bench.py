"""bench/train_step.py runs on the CPU (small model) and reports a consistent table and JSON."""
import json

from conftest import run_script


def test_bench_cpu_smoke(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_script("bench/train_step.py", "--device", "cpu", "--iters", "1", "--warmup", "0", "--sampler_batches",
                      "8", "--batch_size", "8", "--pyx_batch_size", "8", "--n_steps", "2", "--out", out, check=True)
    info = json.load(open(out))
    row = info["rows"][0]
    assert info["device"] == "cpu" and row["variant"] == "fp32_eager" and row["ms_per_iter"] > 0
    # the CPU default net (small CNN, 16 base filters, 3x32x32) counted by hand as 2 x multiply-adds per image:
    # convs 3->16 at 32x32, 16->32 at 16x16, 32->64 at 8x8, 64->64 at 4x4 (3x3), linear 1024->256, class head
    # 256->10 and M-JEM's energy head 256->1 (--uncond)
    by_hand = 2 * (16 * 3 * 9 * 32 * 32 + 32 * 16 * 9 * 16 * 16 + 64 * 32 * 9 * 8 * 8 + 64 * 64 * 9 * 4 * 4
                   + 1024 * 256 + 256 * 10 + 256)
    assert row["forward_flop_per_image"] == by_hand
    # forward FLOPs per image times (2 x K x p(x) batch + 3 x (2 x p(x) batch + labelled batch)) images
    assert row["flop_per_iter"] == row["forward_flop_per_image"] * (2 * 2 * 8 + 3 * (2 * 8 + 8))
    assert row["sgld_image_steps_per_s_bs8"] > 0 and "fp32_eager" in proc.stdout
