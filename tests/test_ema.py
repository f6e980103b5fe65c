"""--ema: an exponential moving average of the weights and BatchNorm buffers, checkpointed, resumed exactly, and the
weights evaluation uses by default."""
from conftest import TINY, run_script
import pytest
import torch

from eval_maebm import build_parser as eval_parser
from test_training_pieces import make_parts
from utils.checkpoint import load_checkpoint
from utils.errors import UserError
from utils.evaluation.context import checkpoint_model, load_model
from utils.training.step import train_step


def test_average_equals_the_hand_computed_one(tmp_path):
    decay = 0.9
    parts, state, guard, _ = make_parts(tmp_path, "--uncond", "--ema", str(decay))
    model = parts.model
    expected = {k: v.clone().float() for k, v in model.state_dict().items()}
    for i in range(3):
        train_step(parts, i, 0.003, False, guard)
        for k, v in model.state_dict().items():
            expected[k] = decay * expected[k] + (1 - decay) * v.float() if v.is_floating_point() else v.float()
    got = parts.ema.state_dict()
    assert got.keys() == expected.keys()
    for k, v in got.items():
        assert torch.allclose(v.float(), expected[k], rtol=1e-5, atol=1e-6), k
    moved = [k for k in got if "running_mean" in k]
    assert moved and all(not torch.equal(got[k], model.state_dict()[k]) for k in moved)  # buffers are averaged too


def run_steps(parts, guard, state, first, last):
    for i in range(first, last):
        train_step(parts, i, 0.003, False, guard)
        state.advance(10)


def whole_and_resumed(tmp_path, *flags):
    """(parts after 4 uninterrupted steps, parts after 2 steps, a checkpoint, a restore into new parts, 2 more)."""
    parts, state, guard, _ = make_parts(tmp_path / "whole", *flags)
    run_steps(parts, guard, state, 0, 4)
    half, half_state, half_guard, logger = make_parts(tmp_path / "half", *flags)
    run_steps(half, half_guard, half_state, 0, 2)
    half_state.save()
    again, again_state, again_guard, _ = make_parts(tmp_path / "again", *flags)
    again_state.restore(load_checkpoint(str(tmp_path / "half" / "run" / "last_ckpt.pt")), logger)
    run_steps(again, again_guard, again_state, 2, 4)
    return parts, again


def test_resumed_average_is_bit_identical(tmp_path):
    parts, again = whole_and_resumed(tmp_path, "--uncond", "--ema", "0.95")
    for k, v in parts.ema.state_dict().items():
        assert torch.equal(v, again.ema.state_dict()[k]), k


def test_ema_flags_are_checked(tmp_path):
    with pytest.raises(UserError, match="--ema_chains"):
        make_parts(tmp_path, "--ema_chains")
    proc = run_script("train_maebm.py", "--ema", "1", "--save_dir", tmp_path / "x")
    assert proc.returncode == 2 and "--ema" in proc.stderr.strip().splitlines()[-1]


def test_chains_of_the_average_on_request(tmp_path, monkeypatch):
    from utils.training import step
    seen = []
    monkeypatch.setattr(step, "run_sampler", lambda name, model, x, *a, **k: seen.append(model) or (x, {}))
    for flags in (("--ema", "0.9"), ("--ema", "0.9", "--ema_chains")):
        parts, _, guard, _ = make_parts(tmp_path / str(len(flags)), "--uncond", *flags)
        train_step(parts, 0, 0.003, False, guard)
        assert seen[-1] is (parts.ema.model if "--ema_chains" in flags else parts.model) and parts.model.training


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory, fmnist_root, fmnist_centers):
    save = tmp_path_factory.mktemp("ema") / "run"
    run_script("train_maebm.py", "--data_root", fmnist_root, "--center_dir", fmnist_centers, "--save_dir", save,
               *TINY, "--n_epochs", "1", "--n_steps", "1", "--ema", "0.5", check=True)
    return save


def test_eval_uses_the_average_unless_told_otherwise(ema_run):
    path = str(ema_run / "last_ckpt.pt")
    ckpt = load_checkpoint(path)
    assert ckpt["ema_state_dict"] is not None
    rows = [line for line in open(ema_run / "metrics.jsonl") if "test_ema/acc" in line]
    assert rows and '"test/acc"' in rows[0]  # both accuracies reported at the epoch's end
    for weights, key in (("auto", "ema_state_dict"), ("ema", "ema_state_dict"), ("online", "model_state_dict")):
        args = eval_parser().parse_args(["--load_path", path, "--eval", "test_clf", "--weights", weights])
        arch, train_args = checkpoint_model(args, ckpt, path)
        model = load_model(ckpt, arch, train_args, path, torch.device("cpu"), args.weights)
        assert all(torch.equal(v, ckpt[key][k]) for k, v in model.state_dict().items()), weights
    assert not all(torch.equal(v, ckpt["model_state_dict"][k]) for k, v in ckpt["ema_state_dict"].items())
    online = dict(ckpt, ema_state_dict=None)
    with pytest.raises(UserError, match="--weights ema"):
        load_model(online, arch, train_args, path, torch.device("cpu"), "ema")
