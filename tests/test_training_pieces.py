"""The training loop's pieces called directly: the plan, one train step, the checkpoint state round trip, and the
divergence guard's rollback."""
from types import SimpleNamespace

import pytest
import torch

import train_maebm
from utils.checkpoint import CheckpointDir, load_checkpoint, rng_state, set_rng_state
from utils.distributed import DistInfo
from utils.errors import UserError
from utils.precision import precision_policy
from utils.run_dir import RunLogger
from utils.sampling.buffer import ReplayBuffer
from utils.sampling.starts import make_start_fn
from utils.training import JointLoss
from utils.training.ema import WeightAverage
from utils.training.guard import DivergenceGuard
from utils.training.plan import make_plan
from utils.training.setup import architecture, make_model_and_optimizer
from utils.training.state import TrainState
from utils.sampling.frozen import frozen_model_state
from utils.sampling.samplers import run_sampler
from utils.training.step import draw_chains, train_step

SHAPE = (1, 28, 28)


class FixedBatches:
    """A stream with a position, like ResumableStream, always yielding the same labelled batch."""

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        y = torch.arange(n) % 10
        self.batch = ((y.float() / 9 * 1.6 - 0.8).view(-1, 1, 1, 1) + 0.1 * torch.randn(n, *SHAPE, generator=g), y)
        self.epoch = self.batch_index = 0

    def next(self):
        self.batch_index += 1
        return self.batch

    def position(self):
        return {"epoch": self.epoch, "batch": self.batch_index}

    def seek(self, epoch, batch):
        self.epoch, self.batch_index = epoch, batch


def make_parts(tmp_path, *flags):
    args = train_maebm.build_parser().parse_args(
        ["--model", "cnn", "--width", "1", "--batch_size", "16", "--buffer_size", "64", "--n_steps", "2", "--init", "u",
         "--save_dir", str(tmp_path / "run"), "--optimizer", "adam", "--lr", "0.003", *flags])
    device, dist = torch.device("cpu"), DistInfo()
    torch.manual_seed(0)
    arch = architecture(args, 1, 28, 10)
    model, optim = make_model_and_optimizer(args, arch, device, dist)
    start_fn = make_start_fn(args, SHAPE, device, None)
    plan = make_plan(args, 10, 1)
    parts = SimpleNamespace(args=args, plan=plan, model=model.train(), optim=optim, start_fn=start_fn, thermo=None,
                            buffer=ReplayBuffer(start_fn(64)) if plan.sampling else None,
                            precision=precision_policy(args.amp, args.amp_sampler, args.channels_last, device),
                            ema=WeightAverage(model, args.ema) if args.ema else None,
                            device=device, px_stream=FixedBatches(16, 1), lab_stream=FixedBatches(32, 2),
                            loss=JointLoss(model, args.px, args.pyx, args.l2_coeff, args.objective))
    (tmp_path / "run").mkdir(parents=True, exist_ok=True)
    state = TrainState(args, arch, model, optim, parts.buffer, parts.px_stream, parts.lab_stream, None,
                       CheckpointDir(args.save_dir, 3), dist, parts.ema)
    return parts, state, DivergenceGuard(args, device, dist), RunLogger(args.save_dir, tensorboard=False)


def test_plan_decides_terms_and_chain_labels_once():
    parse = lambda *f: train_maebm.build_parser().parse_args(["--model", "cnn", *f])
    dcl = make_plan(parse("--objective", "dcl", "--thermo"), 10, 1)
    assert (dcl.generative, dcl.sampling, dcl.classifying) == (False, True, True)
    y = torch.tensor([3, 1])
    assert torch.equal(make_plan(parse("--objective", "j_ebm"), 10, 1).chain_labels(y, 2, "cpu"), y)
    drawn = make_plan(parse("--class_cond_p_x_sample"), 10, 1).chain_labels(None, 500, "cpu")
    assert drawn.shape == (500,) and set(drawn.tolist()) == set(range(10))
    assert make_plan(parse(), 10, 1).chain_labels(y, 2, "cpu") is None
    with pytest.raises(UserError, match="--pyx is 0"):
        make_plan(parse("--objective", "dcl", "--pyx", "0"), 10, 1)


def test_classifier_steps_lower_the_loss(tmp_path):
    parts, _, guard, _ = make_parts(tmp_path, "--px", "0")
    losses = [train_step(parts, i, 0.003, False, guard).loss.item() for i in range(25)]
    assert losses[-1] < 0.5 * losses[0] and not guard.diverged()


def test_a_step_runs_the_chains_and_writes_them_back(tmp_path):
    parts, _, guard, _ = make_parts(tmp_path, "--uncond", "--pyx", "0", "--reinit_freq", "0")
    before = parts.buffer.samples.clone()
    result = train_step(parts, 0, 0.003, True, guard)
    changed = (parts.buffer.samples != before).flatten(1).any(1)
    assert result.x_q.shape == (16, *SHAPE) and len(result.trace) == 2 and 1 <= int(changed.sum()) <= 16
    assert {"loss/px", "energy/f_data", "energy/f_samples"} <= set(result.logs) and "loss/pyx" not in result.logs
    assert any(torch.equal(result.x_q[i], parts.buffer.samples[j]) for i in range(16) for j in range(64))


def test_checkpoint_state_round_trip(tmp_path):
    parts, state, guard, logger = make_parts(tmp_path, "--uncond")
    for i in range(3):
        train_step(parts, i, 0.003, False, guard)
        state.advance(10)
    state.best_valid_acc, state.lr_scale = 0.5, 0.25
    state.save()
    saved_rng = torch.get_rng_state()
    ckpt = load_checkpoint(str(tmp_path / "run" / "last_ckpt.pt"))
    other, other_state, _, _ = make_parts(tmp_path / "other", "--uncond")
    other_state.restore(ckpt, logger)
    assert (other_state.iteration, other_state.batch, other_state.best_valid_acc, other_state.lr_scale) == (3, 3, 0.5, 0.25)
    assert all(torch.equal(v, other.model.state_dict()[k]) for k, v in parts.model.state_dict().items())
    assert torch.equal(other.buffer.samples, parts.buffer.samples) and torch.equal(torch.get_rng_state(), saved_rng)
    assert torch.equal(other.buffer.steps, parts.buffer.steps) and parts.buffer.steps.max() >= 4  # chains' ages
    assert other.px_stream.position() == parts.px_stream.position()
    assert other.optim.state_dict()["state"][0]["step"] == parts.optim.state_dict()["state"][0]["step"]


def test_guard_rolls_back_to_the_last_checkpoint_with_a_smaller_lr(tmp_path):
    parts, state, guard, logger = make_parts(tmp_path, "--uncond", "--max_rollbacks", "1")
    state.save()
    good = {k: v.clone() for k, v in parts.model.state_dict().items()}
    for i in range(2):
        result = train_step(parts, i, 0.003, False, guard)
        state.advance(10)
    guard.flag(torch.tensor(True))
    assert guard.diverged()
    guard.roll_back(state, logger, 2, result.x_q)
    assert (state.iteration, state.rollbacks, state.lr_scale, state.rolled_back_to) == (0, 1, 0.5, 0)
    assert all(torch.equal(v, good[k]) for k, v in parts.model.state_dict().items()) and not guard.diverged()
    assert (tmp_path / "run" / "diverge_0_00000002.png").is_file()
    guard.flag(torch.tensor(True))
    with pytest.raises(UserError, match="after 1 rollbacks"):
        guard.roll_back(state, logger, 1, result.x_q)


def jem_sample_q(model, x0, n_steps, sgld_lr, sgld_std):
    """JEM's sample_q (wgrathwohl/JEM train_wrn_ebm.py), written out: eval mode, x += lr grad f + std N, no clamps."""
    model.eval()
    x_k = x0.clone().requires_grad_(True)
    for _ in range(n_steps):
        f_prime = torch.autograd.grad(model(x_k)[0].sum(), [x_k], retain_graph=True)[0]
        x_k.data += sgld_lr * f_prime + sgld_std * torch.randn_like(x_k)
    model.train()
    return x_k.detach()


def test_jem_sampler_is_jems_sample_q(tmp_path):
    parts, _, _, _ = make_parts(tmp_path, "--sampler", "jem", "--sgld_lr", "20", "--sgld_std", "0.01", "--n_steps",
                                "3", "--reinit_freq", "0.5")
    parts.buffer.samples.mul_(1.5)  # starts outside [-1, 1]: JEM never clamps
    statistics = {k: v.clone() for k, v in parts.model.state_dict().items() if "running" in k}
    torch.manual_seed(5)
    x0, _, _ = parts.buffer.draw(parts.args.batch_size, parts.start_fn, parts.args.reinit_freq)
    expected = jem_sample_q(parts.model, x0, 3, 20.0, 0.01)
    torch.manual_seed(5)
    x0_train, _, _ = parts.buffer.draw(parts.args.batch_size, parts.start_fn, parts.args.reinit_freq)
    with frozen_model_state(parts.model, train=True) as model:
        in_train_mode = run_sampler("langevin", model, x0_train, 3, 20.0, 0.01, bounds=None)[0]
    torch.manual_seed(5)
    got, _, _ = draw_chains(parts, None, False)
    assert torch.allclose(got, expected, atol=1e-5) and got.abs().max() > 1.2  # neither x nor the gradient clamped
    assert not torch.allclose(got, in_train_mode, atol=1e-3)  # BatchNorm on batch statistics moves other chains
    assert parts.model.training and all(torch.equal(v, parts.model.state_dict()[k]) for k, v in statistics.items())


def test_checkpoint_rng_holds_the_training_devices_cuda_state_and_resumes_with_fewer_gpus(monkeypatch, tmp_path):
    """A checkpoint written where 8 GPUs were visible (the old format: every device's state) resumes on cuda:1 of a
    machine with 2; the new format holds the training device's state only; a CPU run touches no CUDA generator."""
    calls = []
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: calls.append((state, device)))
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: torch.full((4,), torch.device(device).index))
    states = [torch.full((4,), i, dtype=torch.uint8) for i in range(8)]
    old = {**rng_state(), "cuda": states}
    set_rng_state(old, torch.device("cuda", 1))
    assert len(calls) == 1 and torch.equal(calls[0][0], states[1]) and calls[0][1] == torch.device("cuda", 1)
    new = rng_state(torch.device("cuda", 1))
    assert torch.equal(new["cuda"], torch.full((4,), 1))
    set_rng_state(new, torch.device("cuda", 0))
    assert torch.equal(calls[1][0], new["cuda"]) and calls[1][1] == torch.device("cuda", 0)
    assert "cuda" not in rng_state(torch.device("cpu"))
    set_rng_state(old, torch.device("cpu"))
    set_rng_state({**old, "cuda": states[:1]}, torch.device("cuda", 3))  # no state for that index: left as it is
    assert len(calls) == 2
    # TrainState saves and restores through the training device (a run on cuda:1 resumed on cuda:0)
    parts, state, _, logger = make_parts(tmp_path, "--uncond")
    monkeypatch.setattr(TrainState, "_device", lambda self: torch.device("cuda", 1))
    state.save()
    ckpt = load_checkpoint(str(tmp_path / "run" / "last_ckpt.pt"))
    assert torch.equal(ckpt["rng"][0]["cuda"], torch.full((4,), 1))
    monkeypatch.setattr(TrainState, "_device", lambda self: torch.device("cuda", 0))
    make_parts(tmp_path / "other", "--uncond")[1].restore(ckpt, logger)
    assert torch.equal(calls[-1][0], torch.full((4,), 1)) and calls[-1][1] == torch.device("cuda", 0)
