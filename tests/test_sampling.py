from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from utils.sampling.buffer import ReplayBuffer, buffer_census, uniform_start
from utils.sampling.sgld import sgld_sample
from utils.sampling.starts import make_start_fn
from utils.training.reporting import buffer_classes


class Quadratic(nn.Module):
    """f(x) = -|x - c|^2 / 2 per image: SGLD ascent must move chains towards c."""

    def __init__(self, c):
        super().__init__()
        self.c = c

    def forward(self, x, y=None):
        return -0.5 * ((x - self.c) ** 2).flatten(1).sum(1), None


def test_one_sgld_step_is_the_upstream_update():
    torch.manual_seed(0)
    x0 = torch.rand(8, 1, 3, 3) * 1.6 - 0.8
    c = torch.rand(1, 1, 3, 3) * 1.6 - 0.8  # |c - x0| < 1.6: most gradients lie inside upstream's clamp
    model = Quadratic(c)
    torch.manual_seed(1)
    got = sgld_sample(model, x0, n_steps=1, step_size=0.3, noise_std=0.01)
    torch.manual_seed(1)
    grad = c - x0  # d f / d x
    assert (grad.abs() < 1).float().mean() > 0.6
    want = (x0 + 0.3 * grad.clamp(-1, 1) + 0.01 * torch.randn_like(x0)).clamp(-1, 1)
    assert torch.allclose(got, want, atol=1e-6)


def test_sgld_ascends_f_and_stays_in_range():
    c = torch.full((1, 1, 4, 4), 0.4)
    model = Quadratic(c)
    x0 = torch.rand(16, 1, 4, 4) * 2 - 1
    x = sgld_sample(model, x0, n_steps=50, step_size=0.1, noise_std=0.0)
    assert model(x)[0].mean() > model(x0)[0].mean()
    assert torch.allclose(x, c.expand_as(x), atol=0.05)
    assert x.min() >= -1 and x.max() <= 1


def test_buffer_reinitialises_about_the_requested_fraction():
    torch.manual_seed(0)
    buf = ReplayBuffer(torch.full((1000, 1, 2, 2), 5.0))
    fresh = 0
    for _ in range(50):
        x, idx, steps = buf.draw(200, lambda n, y=None: torch.zeros(n, 1, 2, 2), reinit_freq=0.05)
        fresh += (x == 0).all(dim=(1, 2, 3)).sum().item()
        assert (idx >= 0).all() and (idx < 1000).all()
        assert torch.equal(steps == 0, (x == 0).all(dim=(1, 2, 3)) | (buf.steps[idx] == 0))
    assert fresh / (50 * 200) == pytest.approx(0.05, abs=0.01)


def test_buffer_update_and_class_blocks():
    buf = ReplayBuffer(torch.zeros(40, 1, 2, 2), n_classes=4)
    y = torch.tensor([0, 1, 2, 3] * 25)
    _, idx, steps = buf.draw(100, lambda n, y=None: torch.zeros(n, 1, 2, 2), reinit_freq=0.0, y=y)
    assert torch.equal(idx // 10, y)
    buf.update(idx[:3], torch.ones(3, 1, 2, 2), steps[:3] + 5)
    assert buf.samples[idx[:3]].eq(1).all()
    assert buf.samples.sum() == 4 * len(set(idx[:3].tolist()))


def test_uniform_start_range():
    torch.manual_seed(0)
    x = uniform_start(20000, (1, 2, 2), "cpu")
    assert x.min() >= -1 and x.max() <= 1 and x.mean().abs() < 0.01
    assert float(x.var()) == pytest.approx(1 / 3, abs=0.005)  # U(-1, 1)
    assert x.min() < -0.999 and x.max() > 0.999


def test_buffer_update_with_repeated_indices_keeps_the_last_chain():
    buf = ReplayBuffer(torch.zeros(5, 1, 1, 1))
    idx = torch.tensor([3, 1, 3, 3, 0])
    x = torch.arange(1.0, 6.0).view(5, 1, 1, 1)
    buf.update(idx, x, torch.arange(10, 15))
    assert buf.samples.flatten().tolist() == [5.0, 2.0, 0.0, 4.0, 0.0]
    assert buf.steps.tolist() == [14, 11, 0, 13, 0]  # each slot's count is its chain's


def test_buffer_counts_the_steps_each_entry_ran_since_its_start():
    torch.manual_seed(0)
    buf = ReplayBuffer(torch.full((50, 1, 1, 1), 5.0))
    start = lambda n, y=None: torch.zeros(n, 1, 1, 1)
    expected = torch.zeros(50, dtype=torch.long)
    for k in (3, 4):  # no restarts: an entry's count is the sum of K over the draws that took it
        x, idx, steps = buf.draw(40, start, reinit_freq=0.0)
        buf.update(idx, x, steps + k)
        expected[idx.unique()] += k
    assert torch.equal(buf.steps, expected) and (expected == 0).any() and (expected == 7).any()
    x, idx, steps = buf.draw(40, start, reinit_freq=1.0)  # restarted entries count from 0
    assert (steps == 0).all()
    buf.update(idx, x, steps + 2)
    expected[idx.unique()] = 2
    assert torch.equal(buf.steps, expected)


def test_standard_gaussian_and_data_plus_noise_starts():
    torch.manual_seed(0)
    n_start = make_start_fn(SimpleNamespace(init="n"), (1, 4, 4), "cpu", None)
    x = n_start(20000)
    assert x.min() >= -1 and x.max() <= 1 and abs(float(x.mean())) < 0.01
    # a standard normal clamped to [-1, 1]: variance 1 - 2 (phi(1) + Phi(-1)) + 2 Phi(-1) = 1 - 2 phi(1) = 0.5161
    assert float(x.var()) == pytest.approx(0.5161, abs=0.01)
    images = [(torch.full((1, 4, 4), v), 0) for v in (-0.5, 0.5)]
    d_start = make_start_fn(SimpleNamespace(init="data", buffer_size=10, init_noise=0.05, seed=1), (1, 4, 4), "cpu",
                            lambda: images)
    x = d_start(20000)
    centre = torch.where(x.mean(dim=(1, 2, 3)) > 0, 0.5, -0.5).view(-1, 1, 1, 1)
    assert float((x - centre).std()) == pytest.approx(0.05, abs=0.003)
    assert 0.45 < float((centre > 0).float().mean()) < 0.55


def test_buffer_census_counts_classes_and_chain_ages():
    classes = torch.tensor([0, 2, 2, 2, 1, 2])
    steps = torch.tensor([0, 5, 10, 0, 3, 6])
    census = buffer_census(classes, steps, 4)
    assert census["class_counts"] == [1, 1, 4, 0]
    assert census["class_shares"] == pytest.approx([1 / 6, 1 / 6, 4 / 6, 0])
    assert (census["min_class_share"], census["max_class_share"]) == (0.0, pytest.approx(4 / 6))
    assert (census["never_sampled"], census["min_steps"]) == (2, 0) and census["mean_steps"] == pytest.approx(4)
    assert "mean_steps" not in buffer_census(classes, None, 4)


class ConstantClassifier(nn.Module):
    """Predicts one class for every image, whatever its weights."""

    def __init__(self, label):
        super().__init__()
        self.label = label
        self.bias = nn.Parameter(torch.zeros(1))

    def classify(self, x):
        return torch.nn.functional.one_hot(torch.full((len(x),), self.label), 3).float() + self.bias


def test_buffer_classes_follow_the_classifier_evaluation_uses():
    parts = SimpleNamespace(buffer=SimpleNamespace(samples=torch.zeros(7, 1, 4, 4)),
                            precision=SimpleNamespace(layout=lambda x: x), model=ConstantClassifier(1), ema=None)
    assert buffer_classes(parts).tolist() == [1] * 7
    parts.ema = SimpleNamespace(model=ConstantClassifier(2))  # with --ema: the average's classes, as eval's census
    assert buffer_classes(parts).tolist() == [2] * 7
