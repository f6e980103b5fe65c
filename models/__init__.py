"""Model zoo: Wide-ResNets and small CNNs wrapped with an energy head."""
import torch
import torch.nn as nn

from utils.errors import UserError

from models.activations import ACTIVATIONS, resolve_act
from models.energy import EnergyModel
from models.energy_nets import MLP, Conv5, TutorialCNN
from models.norms import NORMS
from models.small_cnn import SmallCNN
from models.wide_resnet import WideResNet

MODELS = ("wrn", "cnn", "tutorial_cnn", "conv5", "mlp")


def build_model(model, n_classes, in_channels, depth=28, width=10, norm="batch", dropout_rate=0.0, uncond=False,
                image_size=32, spectral_norm=False, log_normaliser=False, act=None):
    """An EnergyModel from the script flags (--model, --depth, --width, --norm, --dropout_rate, --uncond,
    --spectral_norm: every conv and linear layer spectrally normalised; log_normaliser: a learned log Z, NCE's;
    --act: None for the net's published activation)."""
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {', '.join(NORMS)}")
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; expected one of {', '.join(MODELS)}")
    act = resolve_act(model, act)
    if model == "wrn":
        backbone = WideResNet(depth, width, in_channels, norm, dropout_rate, act=act, image_size=image_size)
    elif model == "cnn":
        backbone = SmallCNN(in_channels, base=16 * width, norm=norm, image_size=image_size, act=act)
    elif model == "tutorial_cnn":
        backbone = TutorialCNN(in_channels, hidden=32 * width, image_size=image_size, act=act)
    elif model == "conv5":
        backbone = Conv5(in_channels, base=64 * width, image_size=image_size, act=act)
    else:
        backbone = MLP(in_channels, image_size, hidden=256 * width, act=act)
    net = EnergyModel(backbone, n_classes, uncond)
    if log_normaliser:
        net.log_z = nn.Parameter(torch.zeros(()))
    if spectral_norm:
        for module in list(net.modules()):
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                torch.nn.utils.parametrizations.spectral_norm(module)
    return net


def recorded_arch(arch):
    """A checkpoint's architecture record with what older records leave out filled in: the net's published
    activation (checkpoints from before --act)."""
    if "act" in arch or "model" not in arch:
        return arch
    return {**arch, "act": resolve_act(arch["model"], None)}


def load_weights(model, state_dict, path):
    """load_state_dict with a mismatch reported as one line naming the checkpoint."""
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        raise UserError(f"checkpoint {path} does not fit the model: {' '.join(lines[:2])}") from None
