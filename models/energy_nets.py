"""Small energy networks from the EBM literature, as feature extractors for EnergyModel."""
import torch.nn as nn

from models.activations import make_act


class Swish(nn.Module):
    def forward(self, x):
        return x * x.sigmoid()


class TutorialCNN(nn.Module):
    """The deep-energy-models tutorial's Swish CNN (16-32-64-64 filters, strided) for 28x28 images."""

    def __init__(self, in_channels=1, hidden=32, image_size=28, feature_dim=64, act="silu"):
        super().__init__()
        c1, c2, c3 = hidden // 2, hidden, hidden * 2
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5, stride=2, padding=4), make_act(act),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), make_act(act),
            nn.Conv2d(c2, c3, 3, stride=2, padding=1), make_act(act),
            nn.Conv2d(c3, c3, 3, stride=2, padding=1), make_act(act),
            nn.Flatten())
        side = (image_size + 8 - 5) // 2 + 1
        for _ in range(3):
            side = (side - 1) // 2 + 1
        self.head = nn.Sequential(nn.Linear(c3 * side * side, feature_dim), make_act(act))
        self.feature_dim = feature_dim

    def forward(self, x):
        return self.head(self.net(x))


class Conv5(nn.Module):
    """A plain 5-conv energy net (LeakyReLU 0.2 as published), 64 filters at the base, doubling while halving the
    size."""

    def __init__(self, in_channels=1, base=64, image_size=28, act="leaky_relu"):
        super().__init__()
        chans = [in_channels, base, base, 2 * base, 4 * base, 8 * base]
        layers = []
        for i in range(5):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, stride=1 if i == 0 else 2, padding=1), make_act(act)]
        self.net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = chans[-1]

    def forward(self, x):
        return self.net(x)


class MLP(nn.Module):
    """A shallow fully connected energy net on flattened images (two hidden layers, LeakyReLU 0.2 as published)."""

    def __init__(self, in_channels=1, image_size=28, hidden=256, act="leaky_relu"):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, hidden),
                                 make_act(act), nn.Linear(hidden, hidden), make_act(act))
        self.feature_dim = hidden

    def forward(self, x):
        return self.net(x)


class PointEnergy(nn.Module):
    """Energy of points in R^d: E(x) = MLP(x) + |x|^2 / (2 prior_std^2), Swish MLP, forward -> (f = -E, f[:, None]).

    The broad Gaussian factor keeps exp(-E) normalisable on all of R^d, so log Z exists (AIS, quadrature);
    the (f, logits) return matches EnergyModel so the samplers take either.
    """

    def __init__(self, dim=2, hidden=128, prior_std=3.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), Swish(), nn.Linear(hidden, hidden), Swish(),
                                 nn.Linear(hidden, 1))
        self.prior_std = prior_std

    def forward(self, x, y=None):
        f = -(self.net(x).squeeze(-1) + (x ** 2).sum(-1) / (2 * self.prior_std ** 2))
        return f, f[:, None]
