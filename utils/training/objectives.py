"""The training objectives: contrastive divergence on marginal or joint energies, regularisers, cross-entropy."""
import argparse

import torch.nn as nn
import torch.nn.functional as F

OBJECTIVES = ("maebm", "m_ebm", "j_ebm", "gcl", "dcl")
# JEM is a recipe of maebm's objective, not an objective of its own; the one line that says which flags give it
JEM_FLAGS = ("--objective maebm (JEM's logsumexp energy: no --uncond) --sampler jem --init u --n_steps 20 --sgld_lr 1 "
             "--sgld_std 0.01 --l2_coeff 0 --optimizer adam --lr 1e-4 --weight_decay 0 --warmup_iters 1000 "
             "--sigma 0.03, as scripts/jem_cifar10.sh")


def objective_name(text):
    """argparse type of --objective: the retired alias jem is refused with the flags that give JEM."""
    if text == "jem":
        raise argparse.ArgumentTypeError(f"jem is no objective of its own; JEM is {JEM_FLAGS}")
    return text
CONDITIONAL_OBJECTIVES = ("j_ebm", "gcl")  # chains are sampled given the data batch's labels


def has_generative_term(objective):
    """dcl is the one objective without a p(x) or p(x, y) term: the rule, in one place."""
    return objective != "dcl"


def energy_regulariser(f_data, f_samples, alpha, kind="asym"):
    """asym: upstream's alpha (mean f(x+)^2 + (mean f(x-))^2); sym: alpha (mean E(x+)^2 + mean E(x-)^2)."""
    if kind == "sym":
        return alpha * ((f_data ** 2).mean() + (f_samples ** 2).mean())
    return alpha * ((f_data ** 2).mean() + f_samples.mean() ** 2)


def contrastive_divergence(f_data, f_samples):
    """Mean E(x+) - mean E(x-) with E = -f: its gradient is the maximum-likelihood gradient estimate."""
    return -(f_data.mean() - f_samples.mean())


def px_loss(f_data, f_samples, l2_coeff, reg="asym"):
    """Upstream M-EBM p(x) loss: contrastive divergence plus the energy regulariser."""
    return contrastive_divergence(f_data, f_samples) + energy_regulariser(f_data, f_samples, l2_coeff, reg)


def pyx_loss(logits, y):
    """Cross-entropy of p(y|x) and the batch accuracy (as tensors, no host sync)."""
    return F.cross_entropy(logits, y), (logits.argmax(1) == y).float().mean()


class JointLoss(nn.Module):
    """One iteration's differentiable part: px times the generative term of the objective plus pyx times the
    p(y|x) cross-entropy. A module, so DistributedDataParallel wraps the whole step: one forward, one
    backward per iteration, while each term keeps its own forward (and BatchNorm batch) as upstream.

    Generative terms: maebm / m_ebm: marginal CD on E(x) = -f(x); j_ebm: joint CD on
    E(x, y) = -logits[y], chains sampled given the data labels; gcl: joint CD minus gamma x marginal CD on
    the same samples; dcl: none (plain cross-entropy)."""

    def __init__(self, model, px, pyx, l2_coeff, objective="maebm", gamma=1.0, reg="asym"):
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; expected one of {', '.join(OBJECTIVES)}")
        self.model, self.pyx, self.l2_coeff = model, pyx, l2_coeff
        self.px = px if has_generative_term(objective) else 0.0
        self.objective, self.gamma, self.reg = objective, gamma, reg

    def generative_term(self, x_data, y_data, x_samples, y_samples):
        """(loss, f on data, f on samples) of the objective's p(x) or p(x, y) part."""
        if self.objective in CONDITIONAL_OBJECTIVES:
            _, logits_p = self.model(x_data)
            _, logits_q = self.model(x_samples)
            fy_p = logits_p.gather(1, y_data[:, None]).squeeze(1)
            fy_q = logits_q.gather(1, y_samples[:, None]).squeeze(1)
            loss = contrastive_divergence(fy_p, fy_q) + energy_regulariser(fy_p, fy_q, self.l2_coeff, self.reg)
            if self.objective == "gcl":
                loss = loss - self.gamma * contrastive_divergence(logits_p.logsumexp(1), logits_q.logsumexp(1))
            return loss, fy_p, fy_q
        f_p, _ = self.model(x_data)
        f_q, _ = self.model(x_samples)
        return px_loss(f_p, f_q, self.l2_coeff, self.reg), f_p, f_q

    def forward(self, x_data=None, x_samples=None, x_labelled=None, y_labelled=None, y_data=None, y_samples=None,
                iteration=0):
        """(loss, detached values to log); terms whose weight is 0 take None inputs. `iteration`: the loop's, which
        only objectives with phases (energy_matching) read."""
        loss, logs = 0.0, {}
        if self.px > 0:
            l_px, f_p, f_q = self.generative_term(x_data, y_data, x_samples, y_samples)
            loss = loss + self.px * l_px
            logs.update({"loss/px": l_px.detach(), "energy/f_data": f_p.detach().mean(),
                         "energy/f_samples": f_q.detach().mean()})
        if self.pyx > 0:
            l_pyx, acc = pyx_loss(self.model.classify(x_labelled), y_labelled)
            loss = loss + self.pyx * l_pyx
            logs.update({"loss/pyx": l_pyx.detach(), "train/acc": acc})
        return loss, logs
