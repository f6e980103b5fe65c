"""Small convolutional feature extractor for fast CPU runs and 28x28 data."""
import torch.nn as nn

from models.activations import make_act
from models.norms import make_norm


class SmallCNN(nn.Module):
    """Four 3x3 conv stages (base, 2x, 4x, 4x filters, strides 1,2,2,2), each with an activation (LeakyReLU 0.2 as
    published), then a fully connected layer over the final feature map: the spatial layout matters for small images."""

    def __init__(self, in_channels=1, base=16, norm="none", image_size=28, feature_dim=256, act="leaky_relu"):
        super().__init__()
        chans = [in_channels, base, 2 * base, 4 * base, 4 * base]
        layers = []
        for i in range(4):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, stride=1 if i == 0 else 2, padding=1),
                       make_norm(norm, chans[i + 1]), make_act(act)]
        side = image_size
        for _ in range(3):
            side = (side + 1) // 2
        self.net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(chans[-1] * side * side, feature_dim),
                                 make_act(act))
        self.feature_dim = feature_dim

    def forward(self, x):
        return self.net(x)
