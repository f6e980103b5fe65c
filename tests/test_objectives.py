"""Each objective's loss on a toy model whose logits are the inputs themselves (known answers)."""
import pytest
import torch

from utils.training import JointLoss, contrastive_divergence, energy_regulariser


class LogitsAreInputs(torch.nn.Module):
    """f(x) = logsumexp(x), f(x)[y] = x[y], classifier logits = x: every energy is known in closed form."""

    def forward(self, x, y=None):
        return (x.logsumexp(1) if y is None else x.gather(1, y[:, None]).squeeze(1)), x

    def classify(self, x):
        return x


XP = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
XQ = torch.tensor([[0.0, 0.0, 0.0], [-1.0, 0.3, 0.2]])
YP = torch.tensor([0, 1])


def test_marginal_objective_with_upstream_regulariser():
    loss, logs = JointLoss(LogitsAreInputs(), px=1.0, pyx=0.0, l2_coeff=0.5, objective="m_ebm")(XP, XQ)
    fp, fq = XP.logsumexp(1), XQ.logsumexp(1)
    want = -(fp.mean() - fq.mean()) + 0.5 * ((fp ** 2).mean() + fq.mean() ** 2)
    assert torch.allclose(loss, want) and torch.allclose(logs["energy/f_data"], fp.mean())


def test_symmetric_regulariser():
    fp, fq = torch.tensor([1.0, 3.0]), torch.tensor([-2.0, 0.0])
    assert energy_regulariser(fp, fq, 0.1, "sym").item() == pytest.approx(0.1 * (5.0 + 2.0))
    assert energy_regulariser(fp, fq, 0.1, "asym").item() == pytest.approx(0.1 * (5.0 + 1.0))


def test_joint_objective_uses_the_labelled_logit():
    loss, _ = JointLoss(LogitsAreInputs(), 1.0, 0.0, 0.0, objective="j_ebm")(XP, XQ, y_data=YP, y_samples=YP)
    want = -(torch.tensor([2.0, 1.5]).mean() - torch.tensor([0.0, 0.3]).mean())
    assert loss.item() == pytest.approx(want.item())


def test_gcl_is_joint_minus_gamma_marginal():
    model = LogitsAreInputs()
    joint, _ = JointLoss(model, 1.0, 0.0, 0.0, objective="j_ebm")(XP, XQ, y_data=YP, y_samples=YP)
    gcl, _ = JointLoss(model, 1.0, 0.0, 0.0, objective="gcl", gamma=0.7)(XP, XQ, y_data=YP, y_samples=YP)
    marginal = contrastive_divergence(XP.logsumexp(1), XQ.logsumexp(1))
    assert gcl.item() == pytest.approx((joint - 0.7 * marginal).item())


def test_gcl_with_gamma_one_is_the_conditional_log_likelihood_gap():
    # gamma = 1: joint minus marginal CD = -(mean log p(y+|x+) - mean log p(y-|x-)), log p(y|x) = x[y] - lse(x)
    yq = torch.tensor([2, 0])
    loss, _ = JointLoss(LogitsAreInputs(), 1.0, 0.0, 0.0, objective="gcl", gamma=1.0)(XP, XQ, y_data=YP, y_samples=yq)
    log_p = lambda x, y: x.gather(1, y[:, None]).squeeze(1) - x.logsumexp(1)
    want = -(log_p(XP, YP).mean() - log_p(XQ, yq).mean())
    assert loss.item() == pytest.approx(want.item(), abs=1e-6) and abs(want.item()) > 0.5


def test_dcl_is_plain_cross_entropy_and_ignores_px():
    loss, logs = JointLoss(LogitsAreInputs(), px=1.0, pyx=1.0, l2_coeff=0.5, objective="dcl")(
        x_labelled=XP, y_labelled=YP)
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(XP, YP).item())
    assert "loss/px" not in logs and logs["train/acc"].item() == 1.0


def test_jem_adds_weighted_cross_entropy():
    model = LogitsAreInputs()
    px_only, _ = JointLoss(model, 1.0, 0.0, 0.0, objective="maebm")(XP, XQ)
    both, _ = JointLoss(model, 1.0, 2.0, 0.0, objective="maebm")(XP, XQ, XP, YP)
    assert both.item() == pytest.approx(px_only.item() + 2 * torch.nn.functional.cross_entropy(XP, YP).item())


def test_unknown_objective():
    with pytest.raises(ValueError, match="unknown objective"):
        JointLoss(LogitsAreInputs(), 1.0, 1.0, 0.0, objective="nce")
