"""TensorBoard holds sample grids as images, the run's flags as hparams, and evaluation results at the
checkpoint's iteration (read back with TensorBoard's own event reader)."""
import glob
import os

import pytest

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from conftest import TINY, run_script
from utils.run_dir import read_metrics


def test_images_hparams_and_eval_results_in_tensorboard(tmp_path, fmnist_root, fmnist_centers):
    save = tmp_path / "run"
    run_script("train_maebm.py", "--data_root", fmnist_root, "--center_dir", fmnist_centers, "--save_dir", save,
               *TINY, "--n_epochs", "1", "--n_steps", "1", "--plot_uncond", check=True)
    run_script("eval_maebm.py", "--load_path", save / "last_ckpt.pt", "--eval", "test_clf", check=True)
    events = EventAccumulator(str(save / "tb"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert {"samples/x_q", "samples/buffer"} <= set(events.Tags()["images"])
    acc = events.Scalars("eval/test_clf/test_acc")
    assert [e.step for e in acc] == [10]
    row = [r for r in read_metrics(str(save / "metrics.jsonl")) if "eval/test_clf/test_acc" in r]
    assert len(row) == 1 and row[0]["iteration"] == 10 and row[0]["eval/test_clf/test_acc"] == acc[0].value
    event_file, = glob.glob(str(save / "tb" / "hparams" / "events.out.tfevents.*"))
    summaries = {v.tag: v for event in EventFileLoader(event_file).Load() for v in event.summary.value}
    start = summaries["_hparams_/session_start_info"].metadata.plugin_data
    assert start.plugin_name == "hparams" and b"n_steps" in start.content and b"fashionmnist" in start.content
    assert "hparam/test/acc" in summaries
    assert os.path.isfile(save / "eval_test_clf" / "test_clf.json")


def test_fid_during_training_is_a_curve(tmp_path, fmnist_root, fmnist_centers, fid_weights):
    save = tmp_path / "run"
    run_script("train_maebm.py", "--data_root", fmnist_root, "--center_dir", fmnist_centers, "--save_dir", save,
               *TINY, "--n_epochs", "2", "--n_steps", "1", "--fid_every", "1", "--fid_n", "30", "--fid_ref_n", "40",
               "--fid_stats_dir", tmp_path / "stats", check=True)
    rows = [r for r in read_metrics(str(save / "metrics.jsonl")) if "fid/fid" in r]
    assert [(r["iteration"], r["epoch"]) for r in rows] == [(10, 0), (20, 1)]
    assert all(r["fid/fid"] > 0 and r["fid/kid_std"] > 0 for r in rows) and rows[0]["fid/fid"] != rows[1]["fid/fid"]
    # the buffer's diagnosis beside it: class shares by the classifier (they sum to 1) and the chains' ages
    for r in rows:
        shares = [r[f"buffer/class_share/{c}"] for c in range(10)]
        assert sum(shares) == pytest.approx(1) and r["buffer/min_class_share"] == min(shares)
    assert 0 < rows[0]["buffer/mean_steps"] < rows[1]["buffer/mean_steps"]  # 160, then 320 steps over 100 entries
    events = EventAccumulator(str(save / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("fid/fid")] == [10, 20]
    stats, = os.listdir(tmp_path / "stats")
    assert stats.startswith("fashionmnist_train_40_pytorchfid_") and stats.endswith(".npz")
