"""Evaluation rebuilds the net a run trained (its --act) and samples new chains as training ran them: the weights and
the model mode of its chains (--ema_chains: the average in eval mode; --sampler jem: eval mode; else train mode)."""
from conftest import TINY, run_script
import pytest
import torch

from eval_maebm import build_parser as eval_parser
from utils.checkpoint import load_checkpoint
from utils.evaluation.context import Evaluation, checkpoint_model, chosen_weights, load_model
from utils.sampling.samplers import run_sampler

RUNS = {"ema_chains": ("--act", "silu", "--ema", "0.5", "--ema_chains"), "ema": ("--ema", "0.5"),
        "jem": ("--sampler", "jem", "--init", "u", "--sgld_std", "0.01")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, fmnist_root, fmnist_centers):
    out = {}
    for name, flags in RUNS.items():
        save = tmp_path_factory.mktemp(name) / "run"
        run_script("train_maebm.py", "--data_root", fmnist_root, "--center_dir", fmnist_centers, "--save_dir", save,
                   *TINY, "--max_iters", "3", "--n_steps", "2", *flags, check=True)
        out[name] = str(save / "last_ckpt.pt")
    return out


def evaluation(path, *flags):
    args = eval_parser().parse_args(["--load_path", path, "--eval", "gen", "--variant", "project", "--batch_size",
                                     "8", *flags])
    ckpt = load_checkpoint(path)
    arch, train_args = checkpoint_model(args, ckpt, path)
    model = load_model(ckpt, arch, train_args, path, torch.device("cpu"), args.weights)
    return Evaluation(args, ckpt, arch, train_args, model, torch.device("cpu")), ckpt


def same_weights(model, state):
    return all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_eval_rebuilds_the_recorded_activation(runs):
    ev, ckpt = evaluation(runs["ema_chains"])
    assert ckpt["arch"]["act"] == "silu" and ckpt["args"]["act"] == "silu"
    kinds = {type(m) for m in ev.model.modules()}
    assert torch.nn.SiLU in kinds and torch.nn.LeakyReLU not in kinds
    ev, ckpt = evaluation(runs["ema"])
    assert ckpt["arch"]["act"] == "leaky_relu"  # the net's published activation, written out
    older = dict(ckpt, arch={k: v for k, v in ckpt["arch"].items() if k != "act"})  # a record from before --act
    args = eval_parser().parse_args(["--load_path", runs["ema"], "--eval", "gen"])
    assert checkpoint_model(args, older, runs["ema"])[0]["act"] == "leaky_relu"


@pytest.mark.parametrize("run,weights,key,train_mode", [
    ("ema_chains", "auto", "ema_state_dict", False), ("ema", "auto", "model_state_dict", True),
    ("ema", "ema", "ema_state_dict", True), ("jem", "auto", "model_state_dict", False)])
def test_new_chains_use_the_weights_and_mode_of_training_chains(runs, run, weights, key, train_mode):
    ev, ckpt = evaluation(runs[run], "--weights", weights)
    loaded = "ema_state_dict" if chosen_weights(ckpt, weights, runs[run]) == "ema" else "model_state_dict"
    assert same_weights(ev.model, ckpt[loaded])  # the classifier's weights: the average whenever there is one
    before = {k: v.clone() for k, v in ev.chain_model().state_dict().items()}
    with ev.chains_as_trained() as model:
        assert model.training == train_mode and same_weights(model, ckpt[key])
    assert not ev.chain_model().training and same_weights(ev.chain_model(), before)


def test_new_chains_of_an_ema_chains_run_are_the_averages_in_eval_mode(runs):
    ev, ckpt = evaluation(runs["ema_chains"])
    torch.manual_seed(3)
    got = ev.sample(8, 2)
    average, _ = evaluation(runs["ema_chains"], "--weights", "ema")
    torch.manual_seed(3)
    start = average.start_fn()(8)
    expected, _ = run_sampler("sgld", average.model.eval(), start, 2, 1.0, 0.0)
    assert torch.allclose(got, expected, atol=1e-6)
    expected_train, _ = run_sampler("sgld", average.model.train(), start, 2, 1.0, 0.0)
    assert not torch.allclose(got, expected_train, atol=1e-4)
