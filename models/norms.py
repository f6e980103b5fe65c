"""Normalisation layers selectable by name (--norm)."""
import torch
import torch.nn as nn

NORMS = ("none", "batch", "instance", "layer", "act")


class ActNorm(nn.Module):
    """Per-channel affine layer initialised from the first batch to zero mean, unit variance (Glow)."""

    def __init__(self, n_channels):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(1, n_channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, n_channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))
        # Host-side copy of `initialized`: reading the buffer on every train-mode forward (every SGLD step) would
        # be a host sync. None means "not known yet"; it is read once, and again after a state dict is loaded.
        self._known_initialized = None

    @torch.no_grad()
    def _init_from(self, x):
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = x.std(dim=(0, 2, 3), keepdim=True)
        self.loc.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + 1e-6))
        self.initialized.fill_(True)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._known_initialized = None

    def forward(self, x):
        # The data-dependent init must happen once, on real data; afterwards this is a plain affine map.
        if self.training and not self._known_initialized:
            if not bool(self.initialized):
                self._init_from(x)
            self._known_initialized = True
        return (x + self.loc) * torch.exp(self.log_scale)


def make_norm(norm, n_channels):
    """A 2-d normalisation layer by name; BatchNorm keeps upstream JEM's momentum 0.9."""
    if norm in (None, "none"):
        return nn.Identity()
    if norm == "batch":
        return nn.BatchNorm2d(n_channels, momentum=0.9)
    if norm == "instance":
        return nn.InstanceNorm2d(n_channels, affine=True)
    if norm == "layer":
        return nn.GroupNorm(1, n_channels)
    if norm == "act":
        return ActNorm(n_channels)
    raise ValueError(f"unknown norm {norm!r}; expected one of {', '.join(NORMS)}")
