"""bench/quality.py at toy size: every recipe row is trained for a wall-clock budget and scored under one
protocol, beside the real-data floor; the table, JSON and figure agree; results are never overwritten silently."""
import json
import os

from PIL import Image
from conftest import run_script
import pytest


@pytest.mark.usefixtures("fid_weights")
def test_quality_bench_toy(tmp_path, fmnist_root, fmnist_centers):
    out = tmp_path / "quality"
    common = ["--data_root", fmnist_root, "--center_dir", fmnist_centers, "--minutes", "0.03", "--n_fresh", "8",
              "--fid_ref_n", "16", "--long_factor", "2", "--n_valid", "20", "--device", "cpu", "--out", out]
    toy = "--width 1 --batch_size 16 --pyx_batch_size 32 --buffer_size 50 --workers 0 --warmup_iters 2"
    proc = run_script("bench/quality.py", "--recipes", "majem", "shortrun", "--train_args", toy, *common, check=True,
                      timeout=900, process=True)
    info = json.load(open(out / "quality.json"))
    majem, shortrun = info["rows"]
    assert [majem["recipe"], shortrun["recipe"]] == ["majem", "shortrun"]
    for row in (majem, shortrun):
        log = open(os.path.join(row["run_dir"], "log.txt")).read()
        assert "--max_minutes 0.03 spent" in log and row["iterations"] >= 1
        assert row["fresh"]["steps"] == row["k"] and row["long"]["steps"] == 2 * row["k"]
        assert row["fresh"]["n"] == row["long"]["n"] == 8
        # barely trained chains are far from real test images scored the same way
        assert row["fresh"]["fid"] > info["floor"]["fid"] and row["fresh"]["kid"] > info["floor"]["kid"]
    assert majem["k"] == 5 and shortrun["k"] == 40
    assert 0 <= majem["test_acc"] <= 1 and "test_acc" not in shortrun  # p(x) only: no classifier
    assert 0 < majem["buffer"]["n"] <= 50 and "buffer" not in shortrun  # short-run keeps no buffer
    table = open(out / "quality.md").read()
    assert "| real test images (floor) |" in table and f"{majem['fresh']['fid']:.1f}" in table
    assert table.count("\n| majem |") == 1 and table.count("\n| shortrun |") == 1
    assert Image.open(out / "quality.png").size[1] > Image.open(out / "quality.png").size[0] / 3  # two rows of grids
    assert "wrote" in proc.stdout
    again = run_script("bench/quality.py", "--recipes", "majem", *common)
    assert again.returncode == 2 and "--overwrite" in again.stderr.strip().splitlines()[-1]
    assert json.load(open(out / "quality.json")) == info
    # a finished run scored again under the same protocol (seeded chains): the same row
    scored = tmp_path / "scored"
    common[common.index(out)] = scored
    common[common.index("--long_factor") + 1] = "0"  # the long chains' scores are checked above
    run_script("bench/quality.py", "--recipes", "--score_runs", f"mine={majem['run_dir']}", *common, check=True)
    mine, = json.load(open(scored / "quality.json"))["rows"]
    assert mine["recipe"] == "mine" and mine["iterations"] == majem["iterations"] and mine["k"] == 5
    assert mine["fresh"]["fid"] == pytest.approx(majem["fresh"]["fid"], rel=1e-4)
