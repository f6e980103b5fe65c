"""--optimizer sam: one step equals SAM's two-step formula, SADA-JEM's adaptive rule, and a resumed run continues
bit-identically."""
import pytest
import torch

from test_ema import whole_and_resumed
from test_training_pieces import make_parts
from utils.training.sam import SharpnessAware, sada_jem_adaptive


def loss_of(w, x, y):
    return ((x @ w - y) ** 2).mean() + (w ** 4).sum()  # not quadratic: the gradient at w + e differs from at w


@pytest.mark.parametrize("adaptive", [False, True])
def test_one_step_equals_the_two_step_formula(adaptive):
    torch.manual_seed(0)
    x, y, w0 = torch.randn(32, 5), torch.randn(32), torch.randn(5)
    rho, lr = 0.3, 0.1
    g1 = torch.func.grad(loss_of)(w0, x, y)
    e = rho * (w0 ** 2 * g1 / (w0.abs() * g1).norm() if adaptive else g1 / g1.norm())
    g2 = torch.func.grad(loss_of)(w0 + e, x, y)
    expected = w0 - lr * g2  # SGD's first step: the momentum buffer is the gradient itself
    w = torch.nn.Parameter(w0.clone())
    sam = SharpnessAware(torch.optim.SGD([w], lr=lr, momentum=0.9), rho, adaptive)
    loss_of(w, x, y).backward()
    sam.first_step()
    assert torch.allclose(w.detach(), w0 + e, atol=1e-6) and w.grad is None
    loss_of(w, x, y).backward()
    sam.second_step()
    assert torch.allclose(w.detach(), expected, atol=1e-6)
    assert not torch.allclose(expected, w0 - lr * g1, atol=1e-4)  # plain SGD would land elsewhere


def test_sada_jem_adaptive_rule():
    assert sada_jem_adaptive(2.0) and sada_jem_adaptive(0.5) and not sada_jem_adaptive(0.05)


def test_resumed_sam_run_is_bit_identical(tmp_path):
    flags = ("--uncond", "--optimizer", "sam", "--rho", "0.05", "--lr", "0.01")
    fresh, _, _, _ = make_parts(tmp_path / "fresh", *flags)
    assert isinstance(fresh.optim, SharpnessAware) and not fresh.optim.adaptive
    parts, again = whole_and_resumed(tmp_path, *flags)
    assert any(not torch.equal(v, fresh.model.state_dict()[k]) for k, v in parts.model.state_dict().items())
    for k, v in parts.model.state_dict().items():
        assert torch.equal(v, again.model.state_dict()[k]), k
