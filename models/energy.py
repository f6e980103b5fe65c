"""Energy heads on a feature extractor: JEM's logsumexp energy or a separate scalar head (--uncond)."""
import contextlib

import torch
import torch.nn as nn


class EnergyModel(nn.Module):
    """f(x) = -E(x): logsumexp of the class logits, or a separate linear head when `uncond`."""

    def __init__(self, backbone, n_classes, uncond=False):
        super().__init__()
        self.f = backbone
        self.n_classes = n_classes
        self.uncond = uncond
        self.class_output = nn.Linear(backbone.feature_dim, n_classes)
        self.energy_output = nn.Linear(backbone.feature_dim, 1) if uncond else None

    def forward(self, x, y=None):
        """Return (f(x) or f(x)[y], logits); f is the negative energy, one value per image."""
        h = self.f(x)
        # The heads run in fp32 on fp32 features even under bf16 autocast: energies, the loss terms built on them
        # and Metropolis tests compare differences of 0.01-0.1 that bf16 (spacing 0.06 at 10) would round away.
        with torch.autocast(h.device.type, enabled=False):
            h = h.float()
            logits = self.class_output(h)
            if self.uncond:
                return self.energy_output(h).squeeze(-1), logits
            if y is None:
                return torch.logsumexp(logits, dim=1), logits
            return logits.gather(1, y[:, None]).squeeze(1), logits

    def classify(self, x):
        h = self.f(x)
        with torch.autocast(h.device.type, enabled=False):
            return self.class_output(h.float())


def class_conditional(model):
    """The model as a joint energy f(x, y) = log p(x, y) + const for class-conditional chains: JEM's logits[y], or,
    with a separate energy head (--uncond), f(x) + log softmax(logits)[y] = log p(x) + log p(y|x)."""
    if not getattr(model, "uncond", False):
        return model

    def joint(x, y=None):
        f, logits = model(x)
        if y is None:
            return f, logits
        return f + logits.log_softmax(1).gather(1, y[:, None]).squeeze(1), logits
    return joint


# inductor generates C++/Triton kernels; tests that count (re)compilations swap in "aot_eager", which traces the same
# graphs (AOTAutograd's forward and backward) without generating code
COMPILE_BACKEND = "inductor"


def compile_backbone(model):
    """torch.compile the feature extractor that every energy, class logit and SGLD gradient goes through (forward()
    and classify() alike); the fp32 heads stay eager, outside autocast, so the fp32-head policy holds compiled too."""
    model.f.compile(backend=COMPILE_BACKEND)
    return model


@contextlib.contextmanager
def weights_frozen(model):
    """Parameters need no gradient inside: the chains take input gradients only, and a compiled backward (traced
    for every input that requires grad) then has no weight-gradient work to throw away."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p in params:
            p.requires_grad_(True)
