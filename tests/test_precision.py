"""The precision policy: bf16 where it is cheap and harmless, fp32 for energies, Metropolis tests, chain starts and
(by default) the chains; evaluation samples a checkpoint in the precision it was trained with."""
import json
import os

from conftest import TINY, run_script
import pytest
import torch
import torch.nn as nn

from models.energy import EnergyModel
from test_training_pieces import make_parts
from utils.checkpoint import load_checkpoint
from utils.evaluation import context
from utils.evaluation.context import Evaluation, checkpoint_model, load_model
from utils.gaussian import GaussianStart
from utils.precision import precision_policy, recorded_policy
from utils.sampling.samplers import mala_sample
from utils.training import JointLoss, step
from utils.training.step import train_step

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def test_energies_and_every_loss_term_are_fp32_under_autocast(tmp_path):
    parts, _, _, _ = make_parts(tmp_path, "--uncond", "--amp", "on")
    x = torch.rand(8, 1, 28, 28) * 2 - 1
    y = torch.arange(8)
    with torch.autocast(**BF16):
        for model in (parts.model, EnergyModel(parts.model.f, 10)):  # separate energy head, and logsumexp (JEM)
            f, logits = model(x)
            assert f.dtype == logits.dtype == torch.float32 and model(x, y)[0].dtype == torch.float32
            assert model.classify(x).dtype == torch.float32
        loss, logs = JointLoss(parts.model, 1.0, 1.0, 0.5)(x, x.flip(0), x, y)
    assert loss.dtype == torch.float32 and all(v.dtype == torch.float32 for v in logs.values())


class QuadraticFeatures(nn.Module):
    """(x, -|x|^2 / 2 per coordinate): with a linear head, a Gaussian energy (elementwise ops, which autocast leaves
    in fp32)."""
    feature_dim = 32

    def forward(self, x):
        return torch.cat([x, -x ** 2 / 2], 1)


def test_metropolis_decisions_under_autocast_equal_fp32_near_the_threshold():
    """Energies near 200 (bf16 spacing 1.0 there) whose differences between proposals are a few units: a bf16 head
    would flip many accept/reject decisions; the fp32 head leaves the chains identical."""
    torch.manual_seed(0)
    model = EnergyModel(QuadraticFeatures(), 1, uncond=True)
    with torch.no_grad():
        model.energy_output.weight.copy_(torch.cat([torch.randn(16), torch.ones(16)])[None])
        model.energy_output.bias.fill_(200.0)
    x = torch.randn(4000, 16)
    neg_energy = lambda z: model(z)[0]
    runs = []
    for autocast in (False, True):
        torch.manual_seed(1)
        with torch.autocast(**BF16, enabled=autocast):
            runs.append(mala_sample(neg_energy, x, 3, 1.0))
    (x32, info32), (x16, info16) = runs
    assert 0.2 < float(info32["acceptance"]) < 0.9  # many decisions sit near the threshold
    assert torch.equal(x32, x16) and torch.equal(info32["acceptance"], info16["acceptance"])


def gaussian_parts(tmp_path, *flags):
    parts, state, guard, logger = make_parts(tmp_path, *flags)
    torch.manual_seed(3)
    a = torch.randn(784, 784) * 0.02
    start = GaussianStart(torch.rand(784) - 0.5, a @ a.T, (1, 28, 28))
    parts.start_fn = start.sample
    parts.buffer.samples = start.sample(64)
    return parts, guard


def test_fresh_starts_are_fp32_and_equal_the_fp32_draw(tmp_path, monkeypatch):
    parts, guard = gaussian_parts(tmp_path, "--amp", "on", "--reinit_freq", "1")  # every chain a fresh start
    seen = []
    monkeypatch.setattr(step, "run_sampler", lambda name, model, x, *a, **k: seen.append(x.clone()) or (x, {}))
    torch.manual_seed(5)
    train_step(parts, 0, 1e-3, False, guard)
    torch.manual_seed(5)
    parts.px_stream.next()  # the step drew its data batch first, from no RNG
    expected = parts.buffer.draw(parts.args.batch_size, parts.start_fn, 1.0)[0]
    assert seen[0].dtype == torch.float32 and torch.equal(seen[0], expected)


def test_chains_in_fp32_equal_the_fp32_paths_chains(tmp_path):
    chains = []
    for flags in ([], ["--amp", "on"]):  # fp32, and bf16 loss with the default fp32 sampler
        parts, guard = gaussian_parts(tmp_path / str(len(flags)), *flags)
        torch.manual_seed(7)
        result = train_step(parts, 0, 1e-3, False, guard)
        chains.append(result.x_q)
        assert result.loss.dtype == torch.float32
    assert torch.equal(chains[0], chains[1])
    parts, guard = gaussian_parts(tmp_path / "all", "--amp", "on", "--amp_sampler", "on")
    torch.manual_seed(7)
    assert not torch.equal(train_step(parts, 0, 1e-3, False, guard).x_q, chains[0])  # bf16 chains do differ


def test_policy_flags_and_record():
    cpu = precision_policy("on", "off", "on", "cpu")
    assert (cpu.loss_bf16, cpu.sampler_bf16, cpu.channels_last) == (True, False, True)
    assert cpu.record() == {"loss": "bf16", "sampler": "fp32", "channels_last": True}
    assert not precision_policy("off", "off", "off", "cpu").loss_bf16
    assert recorded_policy({"precision": cpu.record()}, "cpu").sampler_bf16 is False
    assert recorded_policy({"precision": cpu.record()}, "cpu", "bf16").sampler_bf16 is True
    assert recorded_policy({"amp": "on"}, "cpu").sampler_bf16 is True  # checkpoints from before the policy


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory, fmnist_root, fmnist_centers):
    save = tmp_path_factory.mktemp("precision") / "run"
    run_script("train_maebm.py", "--data_root", fmnist_root, "--center_dir", fmnist_centers, "--save_dir", save,
               *TINY, "--max_iters", "2", "--n_steps", "2", "--amp", "on", "--amp_sampler", "on", check=True)
    return save


def test_a_run_records_its_policy_and_eval_samples_with_it(bf16_run, monkeypatch):
    assert json.load(open(bf16_run / "args.json"))["precision"] == {"loss": "bf16", "sampler": "bf16",
                                                                     "channels_last": False}
    assert "precision: loss bf16, sampler bf16" in open(bf16_run / "log.txt").read()
    from eval_maebm import build_parser
    autocast_on = []
    spy = lambda *a, **k: autocast_on.append(torch.is_autocast_enabled("cpu")) or (a[2], {})
    monkeypatch.setattr(context, "run_sampler", spy)
    for override, expected in ((None, True), ("fp32", False)):
        argv = ["--load_path", str(bf16_run / "last_ckpt.pt"), "--eval", "gen", "--variant", "project"]
        args = build_parser().parse_args(argv + (["--sampler_precision", override] if override else []))
        ckpt = load_checkpoint(args.load_path)
        arch, train_args = checkpoint_model(args, ckpt, args.load_path)
        model = load_model(ckpt, arch, train_args, args.load_path, torch.device("cpu"))
        autocast_on.clear()
        Evaluation(args, ckpt, arch, train_args, model, torch.device("cpu")).sample(4, 2)
        assert autocast_on == [expected]
    assert os.path.isfile(bf16_run / "last_ckpt.pt") and not torch.is_autocast_enabled("cpu")


def test_bf16_policy_keeps_logged_energies_fp32(bf16_run):
    rows = [json.loads(line) for line in open(bf16_run / "metrics.jsonl")]
    energies = [r[k] for r in rows for k in ("energy/f_data", "energy/f_samples") if k in r]
    as_bf16 = [float(torch.tensor(e).bfloat16().float()) for e in energies]
    assert energies and sum(e == b for e, b in zip(energies, as_bf16)) < len(energies) / 2, energies
