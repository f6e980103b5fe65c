"""An exponential moving average of the weights and buffers (--ema), used for sampling and evaluation."""
import copy

import torch


class WeightAverage:
    """EMA copy of a model: after each optimizer step every floating-point parameter and buffer (BatchNorm's running
    statistics included) moves 1 - decay of the way to the model's, integer buffers are copied; no host sync."""

    def __init__(self, model, decay):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def _pairs(self, model):
        return list(zip([*self.model.parameters(), *self.model.buffers()], [*model.parameters(), *model.buffers()]))

    @torch.no_grad()
    def update(self, model):
        pairs = self._pairs(model)
        floats = [(a, m) for a, m in pairs if a.is_floating_point()]
        torch._foreach_lerp_([a for a, _ in floats], [m.detach() for _, m in floats], 1 - self.decay)
        for a, m in pairs:
            if not a.is_floating_point():
                a.copy_(m)

    @torch.no_grad()
    def reset_to(self, model):
        """Start the average again from the model's current weights (a fresh run, or weights loaded from a file)."""
        for a, m in self._pairs(model):
            a.copy_(m)

    def state_dict(self):
        return self.model.state_dict()

    def load_state_dict(self, state):
        self.model.load_state_dict(state)
