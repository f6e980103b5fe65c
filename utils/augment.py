"""Batched image transforms on the training device, equal to the torchvision ones they replace in the hot path."""
import torch
import torch.nn.functional as F


def to_unit_range(images):
    """uint8 images to [-1, 1], bit for bit as ToTensor() followed by Normalize(0.5, 0.5)."""
    return (images.float().div(255) - 0.5) / 0.5


def crop_flip(x, top, left, flip, pad):
    """Each image reflect-padded by `pad`, cut at (top[i], left[i]) to its own size, mirrored where flip[i]:
    RandomCrop(padding=pad, padding_mode="reflect") then hflip, as one gather for the whole batch."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad,) * 4, mode="reflect") if pad else x
    cols = torch.arange(w, device=x.device)
    cols = torch.where(flip.view(n, 1), w - 1 - cols, cols) + left.view(n, 1)  # (n, w)
    rows = torch.arange(h, device=x.device) + top.view(n, 1)  # (n, h)
    flat = (rows[:, :, None] * padded.shape[-1] + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return padded.flatten(2).gather(2, flat).view(n, c, h, w)


def random_crop_flip(x, pad, flip):
    """torchvision's RandomCrop(size, padding=pad, padding_mode="reflect") and, when `flip`, RandomHorizontalFlip(),
    drawn per image from the global RNG of x's device with no host sync: offsets uniform in [0, 2 pad], flips 1/2."""
    n = len(x)
    top = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
    left = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
    mirror = torch.rand(n, device=x.device) < 0.5 if flip else torch.zeros(n, dtype=torch.bool, device=x.device)
    return crop_flip(x, top, left, mirror, pad)
