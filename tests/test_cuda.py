"""The CUDA path: run by bench/gpu_check.py on a GPU machine (pytest -m cuda); deselected elsewhere."""
import json
import os

import pytest
import torch

from conftest import TINY, run_script
from models import build_model
from utils.checkpoint import load_checkpoint
from utils.gaussian import load_gaussian_start

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (bench/gpu_check.py)")]
WRN = ["--model", "wrn", "--depth", "10", "--width", "2", "--device", "cuda", "--n_steps", "2"]


@pytest.mark.parametrize("fast", [[], ["--amp", "on"], ["--channels_last", "on"], ["--amp", "on", "--channels_last", "on"],
                                  ["--compile"]])
def test_fast_path_flags_train_on_cuda(fast, tmp_path, fmnist_root, fmnist_centers):
    save = tmp_path / "run"
    run_script("train_maebm.py", "--data_root", fmnist_root, "--center_dir", fmnist_centers, "--save_dir", save,
               *TINY, *WRN, *fast, "--max_iters", "4", check=True)
    ckpt = load_checkpoint(str(save / "last_ckpt.pt"))
    assert ckpt["iteration"] == 4 and torch.isfinite(ckpt["replay_buffer"]).all() and "cuda" in ckpt["rng"][0]
    log = open(save / "log.txt").read()
    assert "on cuda" in log


def test_buffer_and_gaussian_live_on_the_device(fmnist_root, fmnist_centers):
    start = load_gaussian_start(fmnist_centers, "fashionmnist", (1, 28, 28), device="cuda")
    x = start.sample(16)
    assert x.device.type == "cuda" and start.scale_tril.device.type == "cuda"


def test_cuda_checkpoint_resumes(tmp_path, fmnist_root, fmnist_centers):
    common = ["--data_root", fmnist_root, "--center_dir", fmnist_centers, *TINY, *WRN, "--ckpt_every_iters", "3"]
    full, part = tmp_path / "full", tmp_path / "part"
    run_script("train_maebm.py", *common, "--save_dir", full, "--max_iters", "12", check=True)
    run_script("train_maebm.py", *common, "--save_dir", part, "--max_iters", "6", check=True)
    run_script("train_maebm.py", *common, "--save_dir", part, "--max_iters", "12", "--resume", part, check=True)
    a, b = load_checkpoint(str(full / "last_ckpt.pt")), load_checkpoint(str(part / "last_ckpt.pt"))
    assert a["iteration"] == b["iteration"] == 12
    # cuDNN kernels need not be bit-reproducible: the resumed run continues the same trajectory closely
    rows = lambda d: [json.loads(line) for line in open(os.path.join(d, "metrics.jsonl"))]
    loss = lambda d: [r["loss/total"] for r in rows(d) if "loss/total" in r]
    assert len(loss(full)) == len(loss(part)) == 12
    assert max(abs(x - y) for x, y in zip(loss(full), loss(part))) < 0.05 * max(abs(x) for x in loss(full)) + 1e-3


def test_compiled_energy_model_has_no_graph_breaks():
    """--compile compiles the energy model that every SGLD step calls: one graph, no breaks."""
    model = build_model("wrn", 10, 1, depth=10, width=2, image_size=28).cuda()
    explanation = torch._dynamo.explain(model)(torch.rand(8, 1, 28, 28, device="cuda"))
    assert explanation.graph_break_count == 0, explanation.break_reasons
