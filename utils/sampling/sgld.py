"""Upstream M-EBM/JEM SGLD: ascent on f = -E with a clamped gradient, optional noise, clamp to [-1,1]."""
import torch


def record_trace(trace, f, grad):
    """Append (energy -f, ||grad||) per chain, shape (2, batch), to `trace` when it is a list."""
    if trace is not None:
        trace.append(torch.stack([-f.detach().float(), grad.detach().flatten(1).float().norm(dim=1)]))


def input_grad(f, x):
    """grad_x of sum f. Taken outside autocast, so each backward op runs in its forward's dtype: inside an autocast
    region the fp32 heads' backward would run in bf16."""
    with torch.autocast(x.device.type, enabled=False):
        g, = torch.autograd.grad(f.sum(), x)
    return g


def sgld_sample(model, x, n_steps, step_size, noise_std, y=None, grad_clip=1.0, trace=None):
    """Run `n_steps` of SGLD from `x`; returns the detached final samples.

    The model stays in whatever mode the caller set (upstream samples in train mode, so BatchNorm
    statistics move with the chains). No host synchronisation happens inside the loop. `trace`: see
    utils/sampling/samplers.py.
    """
    x = x.detach()
    for _ in range(n_steps):
        x.requires_grad_(True)
        fx, _ = model(x, y)
        grad = input_grad(fx, x)
        record_trace(trace, fx, grad)
        x = x.detach() + step_size * grad.clamp(-grad_clip, grad_clip)
        if noise_std > 0:
            x = x + noise_std * torch.randn_like(x)
        x = x.clamp(-1, 1)
    return x.detach()
