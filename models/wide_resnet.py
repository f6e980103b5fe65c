"""Wide-ResNet feature extractor (Zagoruyko & Komodakis) in JEM's pre-activation form."""
import torch.nn as nn
import torch.nn.functional as F

from models.activations import make_act
from models.norms import make_norm


class WideBasic(nn.Module):
    """Pre-activation residual block: norm, activation, conv, dropout, norm, activation, conv."""

    def __init__(self, in_planes, planes, dropout_rate, stride, norm, act):
        super().__init__()
        self.act = make_act(act)
        self.bn1 = make_norm(norm, in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, padding=1, bias=True)
        self.dropout = nn.Dropout(p=dropout_rate) if dropout_rate > 0 else nn.Identity()
        self.bn2 = make_norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=True)
        self.shortcut = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=True)

    def forward(self, x):
        out = self.dropout(self.conv1(self.act(self.bn1(x))))
        out = self.conv2(self.act(self.bn2(out)))
        return out + self.shortcut(x)


class WideResNet(nn.Module):
    """WRN-depth-width over any channel count and image size; returns pooled features. Images of 64 pixels
    and more get upstream's fourth stage (128 x width channels, stride 2)."""

    def __init__(self, depth=28, widen_factor=10, in_channels=3, norm="batch", dropout_rate=0.0, act="leaky_relu",
                 image_size=32):
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"Wide-ResNet depth must be 6n+4 (10, 16, 22, 28, ...), got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        strides = (1, 2, 2)
        if image_size >= 64:
            widths, strides = widths + [int(128 * widen_factor)], strides + (2,)
        self.act = make_act(act)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=True)
        layers, in_planes = [], widths[0]
        for i, stride in enumerate(strides):
            for j in range(n):
                layers.append(WideBasic(in_planes, widths[i + 1], dropout_rate, stride if j == 0 else 1, norm, act))
                in_planes = widths[i + 1]
        self.layers = nn.Sequential(*layers)
        self.bn1 = make_norm(norm, in_planes)
        self.feature_dim = in_planes

    def forward(self, x):
        out = self.act(self.bn1(self.layers(self.conv1(x))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)
