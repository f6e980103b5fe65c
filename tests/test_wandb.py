"""--wandb PROJECT: an offline Weights & Biases run holds the scalars, images and flags that TensorBoard gets."""
import glob
import json
import os
import struct

import pytest

from conftest import TINY, error_line, run_script


def wandb_records(path):
    """The protobuf records of a run-*.wandb file (wandb's LevelDB-style log: 32 KiB blocks of framed chunks)."""
    from wandb.proto import wandb_internal_pb2
    data = open(path, "rb").read()
    assert data[:4] == b":W&B", data[:7]
    pos, block, pending, records = 7, 32768, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        length, kind = struct.unpack("<HB", data[pos + 4:pos + 7]) if left >= 7 else (0, 0)
        if kind == 0:  # the zero padding at a block's end
            pos += left
            continue
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or its last chunk
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def record_key(item):
    return item.key or "/".join(item.nested_key)


def test_offline_wandb_run_holds_the_logged_metrics_images_and_flags(tmp_path, fmnist_root, fmnist_centers):
    save = tmp_path / "run"
    run_script("train_maebm.py", "--data_root", fmnist_root, "--center_dir", fmnist_centers, *TINY, "--n_epochs", "1",
               "--plot_uncond", "--save_dir", save, "--wandb", "ebm-test", check=True,
               env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    files = glob.glob(str(save / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(files) == 1
    records = wandb_records(files[0])
    history = [{record_key(item): json.loads(item.value_json) for item in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    logged = [json.loads(line) for line in open(save / "metrics.jsonl")]
    # every scalar row of metrics.jsonl is in wandb's history at its iteration
    for row in logged:
        match = [h for h in history if h.get("_step") == row["iteration"] and "loss/total" in h] if "loss/total" in row \
            else [h for h in history if h.get("_step") == row["iteration"] and "test/acc" in h]
        assert match, row
        for key in ("loss/total", "test/acc", "lr"):
            if key in row:
                assert match[0][key] == pytest.approx(row[key]), key
    images = {record_key(item) for r in records if r.WhichOneof("record_type") == "history" for item in r.history.item
              if record_key(item).endswith("/_type") and "image" in item.value_json}
    assert "samples/x_q/_type" in images and "samples/buffer/_type" in images
    config = {record_key(item): json.loads(item.value_json) for r in records if r.WhichOneof("record_type") == "run"
              for item in r.run.config.update}
    assert config["n_steps"] == json.load(open(save / "args.json"))["n_steps"]
    assert open(save / "wandb_id.txt").read().strip() in files[0]


def test_wandb_needs_the_package_or_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "wandb" else object())
    proc = run_script("train_maebm.py", "--wandb", "ebm-test", "--save_dir", tmp_path / "run")
    assert "--wandb: the wandb package is not installed" in error_line(proc)
    assert not os.path.exists(tmp_path / "run")
