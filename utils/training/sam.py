"""Sharpness-aware minimisation (Foret et al. 2021) around a base optimizer, as SADA-JEM trains JEMs with it."""
import contextlib

import torch


class SharpnessAware:
    """SAM: first_step moves the weights to w + e(w), e = rho g / ||g|| (adaptive SAM: rho |w|^2 g / || |w| g ||),
    the loss is taken again there, and second_step restores w and lets the base optimizer step with that gradient.
    The base optimizer's state (momentum) is part of state_dict, so a resumed run continues exactly."""

    def __init__(self, base, rho, adaptive):
        self.base, self.rho, self.adaptive = base, rho, adaptive
        self._saved = []

    @property
    def param_groups(self):
        return self.base.param_groups

    def _params(self):
        return [p for group in self.base.param_groups for p in group["params"] if p.grad is not None]

    def zero_grad(self, set_to_none=True):
        self.base.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def first_step(self):
        params = self._params()
        scaled = [(p.abs() * p.grad if self.adaptive else p.grad) for p in params]
        scale = self.rho / (torch.linalg.vector_norm(torch.stack([s.norm() for s in scaled])) + 1e-12)
        self._saved = [(p, p.detach().clone()) for p in params]
        for p, s in zip(params, scaled):
            p.add_((p.abs() if self.adaptive else 1.0) * s * scale)
        self.zero_grad()

    @torch.no_grad()
    def second_step(self):
        for p, saved in self._saved:
            p.copy_(saved)
        self._saved = []
        self.base.step()

    def state_dict(self):
        return {"base": self.base.state_dict(), "rho": self.rho, "adaptive": self.adaptive}

    def load_state_dict(self, state):
        self.base.load_state_dict(state["base"])


@contextlib.contextmanager
def running_statistics_frozen(model):
    """BatchNorm normalises with the batch but leaves its running statistics alone (SAM's second pass, as SADA-JEM)."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum


def sada_jem_adaptive(rho):
    """SADA-JEM's rule: adaptive SAM for rho >= 0.5 (its default rho 2), plain SAM below."""
    return rho >= 0.5
