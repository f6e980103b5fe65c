"""eval_maebm.py on a small checkpoint trained here: every mode writes its JSON and figures; bad input fails cleanly."""
import json
import os

from PIL import Image
from conftest import TINY, run_script
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from models import build_model
from utils.checkpoint import load_checkpoint
from utils.data import image_transform, load_dataset
from utils.evaluation.embedding import plot_tsne
from utils.metrics import expected_calibration_error
from utils.run_dir import read_metrics


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fmnist_root, fmnist_centers):
    save = str(tmp_path_factory.mktemp("eval") / "run")
    run_script("train_maebm.py", "--data_root", fmnist_root, "--center_dir", fmnist_centers, "--save_dir", save,
               *TINY, "--n_epochs", "3", "--optimizer", "adam", "--lr", "0.001", "--n_steps", "3", check=True)
    uncond = str(tmp_path_factory.mktemp("eval") / "uncond")
    run_script("train_maebm.py", "--data_root", fmnist_root, "--center_dir", fmnist_centers, "--save_dir", uncond,
               *TINY, "--max_iters", "3", "--pyx", "0", "--uncond", check=True)
    return os.path.join(save, "last_ckpt.pt"), os.path.join(uncond, "last_ckpt.pt")


def evaluate(ckpt, mode, out, *extra, check=True, process=False):
    return run_script("eval_maebm.py", "--load_path", ckpt, "--eval", mode, "--save_dir", out, *extra, check=check,
                      process=process)


FAST = ["--n_points", "64", "--n_sample_steps", "4", "--batch_size", "50", "--n_steps", "1", "--buffer_size", "50"]


@pytest.mark.parametrize("mode,files", [
    ("test_clf", []), ("cali", ["reliability.png"]), ("tsne", ["tsne.png", "energy_violin.png"]),
    ("OOD", ["roc.png"]), ("logp_hist", ["logp_hist.png"]), ("uncond_samples", ["uncond_samples.png"]),
    ("cond_samples", ["samples_0.png"]), ("quality", ["class_0_top_bottom.png"]), ("best_samples", []),
])
def test_modes_write_results(mode, files, trained, tmp_path, fmnist_root):
    out = str(tmp_path / mode)
    proc = evaluate(trained[0], mode, out, *FAST, process=mode == "test_clf")  # one mode by the real command line
    result = json.load(open(os.path.join(out, f"{mode}.json")))
    assert result["mode"] == mode and result["iteration"] == 30
    for f in files:
        assert os.path.isfile(os.path.join(out, f)), f
    assert f"{mode}:" in proc.stdout
    f, probs, y, buffer_size = checkpoint_outputs(trained[0], fmnist_root)
    if mode == "test_clf":  # refined by one step first (FAST's --n_steps 1): close to, not equal to, the plain accuracy
        assert result["n"] == 160 and abs(result["test_acc"] - (probs.argmax(1) == y).float().mean().item()) < 0.1
    if mode == "cali":
        correct = (probs.argmax(1) == y).numpy()
        assert result["test_acc"] == pytest.approx(correct.mean())
        assert result["ece"] == pytest.approx(expected_calibration_error(probs.max(1).values.numpy(), correct, 20))
        assert len(result["bins"]) == 20 and sum(b["count"] for b in result["bins"]) == 160
    if mode == "OOD":
        assert set(result["auroc"]) >= {"uniform", "constant", "blur"}
        assert result["auroc"]["uniform"]["px"] > 0.9  # data has far lower energy than uniform noise
        row = result["tables"]["px"]["uniform"]
        assert row["auroc"] == result["auroc"]["uniform"]["px"] and row["aupr"] > 0.8 and row["fpr95"] < 0.5
    if mode == "logp_hist":
        assert result["mean_f"]["fashionmnist"] == pytest.approx(f[:64].mean().item(), abs=0.5)
    if mode in ("cond_samples", "quality", "best_samples"):
        counts = result["per_class_counts"]
        assert sum(counts.values() if isinstance(counts, dict) else counts) == buffer_size
    if mode == "tsne":
        assert set(result["mean_energy"]) == {"data", "buffer", "start"} and result["n_per_set"] == 64
    if mode == "uncond_samples":
        assert result["n"] == 50 and result["rounds"] == 4


def checkpoint_outputs(ckpt_path, data_root):
    """(f(x), softmax, labels) of the checkpoint's model on the test set in eval mode, and its buffer size."""
    ckpt = load_checkpoint(ckpt_path)
    a = ckpt["arch"]
    model = build_model(a["model"], a["n_classes"], a["in_channels"], a["depth"], a["width"], a["norm"],
                        uncond=a["uncond"], image_size=a["image_size"])
    model.load_state_dict(ckpt["model_state_dict"])
    test = load_dataset("fashionmnist", data_root, False, image_transform("fashionmnist", False))
    x, y = map(torch.stack, zip(*[(img, torch.tensor(label)) for img, label in test]))
    with torch.no_grad():
        f, logits = model.eval()(x)
    return f, logits.softmax(1), y, len(ckpt["replay_buffer"])


def test_gen_writes_samples_chains_and_npz(trained, tmp_path):
    import numpy as np
    out = str(tmp_path / "gen")
    proc = evaluate(trained[0], "gen", out, "--n_samples", "30", "--n_sample_steps", "6", "--snapshot_every", "2",
                    "--no_fid", "--variant", "project")
    z = np.load(os.path.join(out, "gen_samples.npz"))
    assert z["samples"].shape == (30, 1, 28, 28) and z["chain_snapshots"].shape == (10, 4, 1, 28, 28)
    assert z["samples"].min() >= -1 and z["samples"].max() <= 1
    # the same samples as 8-bit PNGs, the folder layout pytorch-fid and torch-fidelity read
    pngs = sorted(os.listdir(os.path.join(out, "gen_samples")))
    assert len(pngs) == 30 and pngs[0] == "00000.png"
    img = np.asarray(Image.open(os.path.join(out, "gen_samples", pngs[7])))
    assert img.shape == (28, 28) and np.abs(img / 127.5 - 1 - z["samples"][7, 0]).max() <= 0.5 / 127.5 + 1e-6
    assert "gen: 30 chains of 6 steps" in proc.stderr and "1/1" in proc.stderr  # a progress bar with a count
    assert os.path.isfile(os.path.join(out, "gen_chains.png"))


@pytest.mark.usefixtures("fid_weights")
def test_fid_of_buffer_with_cached_reference(trained, tmp_path):
    out, stats = str(tmp_path / "fid"), str(tmp_path / "stats")
    evaluate(trained[0], "fid", out, "--fid_ref_n", "40", "--fid_stats_dir", stats, "--ratio", "0.5")
    r = json.load(open(os.path.join(out, "fid.json")))
    assert r["fid"] > 0 and r["n_samples"] < 100 and "pytorch-fid" in r["convention"]
    assert r["is"].startswith("unavailable") and "kid_mean" in r
    assert len(os.listdir(stats)) == 1
    # the buffer's diagnosis: classes predicted over the buffer and the scored images, and the chains' ages
    assert sum(r["buffer_class_counts"]) == 100 and sum(r["scored_class_counts"]) == r["n_samples"]
    assert [r["per_class"][str(c)]["n"] for c in range(10)] == r["scored_class_counts"]
    steps = load_checkpoint(trained[0])["buffer_steps"]  # 30 iterations of 16 chains, K=3, over 100 entries
    assert r["buffer_mean_steps"] == pytest.approx(float(steps.float().mean())) and 3 < r["buffer_mean_steps"] < 90
    assert r["buffer_entries_never_sampled"] == int((steps == 0).sum()) and r["scored_min_steps"] % 3 == 0
    evaluate(trained[0], "fid", str(tmp_path / "fid2"), "--fid_ref_n", "40", "--fid_stats_dir", stats,
                     "--ratio", "0.5")
    assert json.load(open(os.path.join(tmp_path / "fid2", "fid.json")))["fid"] == pytest.approx(r["fid"])
    # the second run read the cache: shifting the cached mean moves its FID by exactly the mean term's change
    cache = os.path.join(stats, os.listdir(stats)[0])
    z = dict(np.load(cache))
    z["mu"] = z["mu"] + 1.0
    np.savez(cache, **z)
    evaluate(trained[0], "fid", str(tmp_path / "fid3"), "--fid_ref_n", "40", "--fid_stats_dir", stats,
             "--ratio", "0.5")
    assert abs(json.load(open(os.path.join(tmp_path / "fid3", "fid.json")))["fid"] - r["fid"]) > 100


@pytest.mark.parametrize("name,ckpt_index,extra,expected", [
    ("missing checkpoint", None, ["--eval", "test_clf"], "not found"),
    ("other dataset", 0, ["--eval", "test_clf", "--dataset", "cifar10"], "does not match"),
    ("labels on unconditional model", 1, ["--eval", "cali"], "without labels"),
    ("unknown mode", 0, ["--eval", "bogus"], "--eval"),
    ("FID of one new chain", 0, ["--eval", "fid", "--fresh_samples", "1", "--n_steps", "1"], "--fresh_samples"),
    ("FID reference of one image", 0, ["--eval", "fid", "--fid_ref_n", "1"], "--fid_ref_n"),
    ("unknown mask", 0, ["--eval", "inpaint", "--masks", "centre", "top"], "--masks"),
    ("negative noise level", 0, ["--eval", "denoise", "--noise_levels", "0.1", "-0.3"], "--noise_levels"),
    ("no draws", 0, ["--eval", "inpaint", "--n_draws", "0"], "--n_draws"),
    ("restoration of one image", 0, ["--eval", "denoise", "--n_points", "1"], "--n_points"),
])
def test_eval_bad_input(name, ckpt_index, extra, expected, trained, tmp_path):
    ckpt = str(tmp_path / "none.pt") if ckpt_index is None else trained[ckpt_index]
    proc = run_script("eval_maebm.py", "--load_path", ckpt, "--save_dir", str(tmp_path / "out"), *extra)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and expected in lines[0], proc.stderr
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.usefixtures("fid_weights")
def test_eval_launchers(trained, tmp_path):
    proc = run_script("scripts/eval_ebm.sh", trained[0], "test_clf", "--save_dir", str(tmp_path / "one"), check=True)
    assert "test_clf:" in proc.stdout
    stats = str(tmp_path / "stats")
    proc = run_script("scripts/eval_all_in_one.sh", trained[1], *FAST, "--no_fid", "--n_samples", "10", "--ood", "uniform", "--ratio", "10",
                      "--fid_ref_n", "20", "--fid_stats_dir", stats, check=True)
    # a --pyx 0 checkpoint skips the modes that need a classifier and runs the others
    assert "== test_clf" not in proc.stdout and "== cali" not in proc.stdout
    for mode in ("OOD", "logp_hist", "tsne", "uncond_samples", "fid", "gen"):
        assert f"{mode}:" in proc.stdout
        assert os.path.isfile(os.path.join(os.path.dirname(trained[1]), f"eval_{mode}", f"{mode}.json"))


def test_diagnostics_mode(trained, tmp_path):
    out = str(tmp_path / "diag")
    evaluate(trained[0], "diagnostics", out)
    r = json.load(open(os.path.join(out, "diagnostics.json")))
    rows = [row for row in read_metrics(os.path.join(os.path.dirname(trained[0]), "metrics.jsonl"))
            if "diag/grad_norm" in row]
    gap, grad = [row["diag/energy_gap"] for row in rows], [row["diag/grad_norm"] for row in rows]
    assert r["n_rows"] == 30 and r["corr_lag0"] == pytest.approx(np.corrcoef(gap, grad)[0, 1], abs=1e-6)
    assert os.path.isfile(os.path.join(out, "diagnostics.png"))


def test_tsne_panels_share_one_colour_scale_across_sets():
    points = {k: np.random.default_rng(i).normal(size=(5, 2)) for i, k in enumerate(("data", "buffer", "start"))}
    # the sets' own ranges differ: data holds only classes 0-1 and the lowest energies
    classes = {"data": torch.tensor([0, 1, 0, 1, 0]), "buffer": torch.tensor([3, 4, 5, 6, 7]),
               "start": torch.tensor([9, 9, 8, 2, 2])}
    energies = {"data": torch.linspace(-3, -2, 5), "buffer": torch.linspace(0, 1, 5), "start": torch.linspace(4, 5, 5)}
    fig = plot_tsne(points, classes, energies, n_classes=10)
    class_ax, energy_ax = fig.axes[:2]
    filled = [c for c in class_ax.collections if len(c.get_offsets())]
    assert len(filled) == 3 and {(c.norm.vmin, c.norm.vmax) for c in filled} == {(-0.5, 9.5)}
    filled = [c for c in energy_ax.collections if len(c.get_offsets())]
    assert {(c.norm.vmin, c.norm.vmax) for c in filled} == {(-3.0, 5.0)}
    assert [t.get_text() for t in class_ax.get_legend().get_texts()] == ["data", "buffer", "start"]
    plt.close(fig)
