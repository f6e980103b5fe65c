"""Activation functions selectable by name (--act); each net's published one is its default."""
import torch.nn as nn

from utils.errors import UserError

ACTIVATIONS = ("leaky_relu", "silu", "relu", "gelu", "elu")
# What each net was published with: LeakyReLU(0.2) in M-EBM/JEM's WRN and this project's CNNs, Swish in the tutorial's
PUBLISHED_ACT = {"wrn": "leaky_relu", "cnn": "leaky_relu", "conv5": "leaky_relu", "mlp": "leaky_relu",
                 "tutorial_cnn": "silu"}
LEAK = 0.2


def resolve_act(model, act):
    """The activation a net is built with: `act`, or the net's published one for None / "auto"."""
    if act in (None, "auto"):
        return PUBLISHED_ACT[model]
    if act not in ACTIVATIONS:
        raise UserError(f"--act: unknown activation {act!r}; expected auto or one of {', '.join(ACTIVATIONS)}")
    return act


def make_act(name):
    """A fresh activation module (no parameters, so the choice never changes a state dict's keys)."""
    if name == "leaky_relu":
        return nn.LeakyReLU(LEAK)
    return {"silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "elu": nn.ELU}[name]()
