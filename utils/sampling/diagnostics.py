"""Diagnostics of the sampling chains: energy and gradient norm along each chain, and long-run chains."""
import torch

from utils.progress import progress
from utils.sampling.samplers import ANNEAL_FACTOR, run_sampler


def chain_summary(trace, prefix):
    """Means over chains of the energy and ||grad_x f|| at the first and last traced step; trace (K, 2, batch)."""
    first, last = trace[0].float().mean(1).tolist(), trace[-1].float().mean(1).tolist()
    return {f"{prefix}/energy_first": first[0], f"{prefix}/energy_last": last[0],
            f"{prefix}/grad_norm_first": first[1], f"{prefix}/grad_norm_last": last[1]}


def plot_chain_trace(trace, path, title, max_chains=32):
    """Energy and gradient norm against the step for up to `max_chains` chains (thin) and their mean (bold)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    trace = trace.float().cpu()
    steps = torch.arange(len(trace))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for ax, k, name in zip(axes, (0, 1), ("energy E(x) = -f(x)", "||grad_x f(x)||")):
        ax.plot(steps, trace[:, k, :max_chains], lw=0.5, alpha=0.5)
        ax.plot(steps, trace[:, k].mean(1), lw=2, color="black", label="mean over chains")
        ax.set_xlabel("sampler step")
        ax.set_title(name)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class ProgressTrace(list):
    """A chain trace that moves a progress bar with each step the sampler records."""

    def __init__(self, bar):
        super().__init__()
        self.bar = bar

    def append(self, item):
        super().append(item)
        self.bar.update(1)


def long_run_chains(model, start_fn, n, n_steps, sampler, step_size, noise_std, n_leapfrog, seed, device, autocast,
                    anneal_factor=ANNEAL_FACTOR, time_cutoff=1.0):
    """(samples, trace (n_steps, 2, n)) of `n` chains run `n_steps` from start_fn in eval mode.

    Seeded inside a forked RNG, so the chains start from the same noise every time and the training run's
    random stream (and so its result) is the same with or without them.
    """
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
            progress(total=n_steps, desc=f"long-run chains: {n} x {n_steps} steps", leave=False) as bar:
        torch.manual_seed(seed)
        trace = ProgressTrace(bar)
        x0 = start_fn(n)
        with autocast():
            x, _ = run_sampler(sampler, model, x0, n_steps, step_size, noise_std, n_leapfrog=n_leapfrog, trace=trace,
                               anneal_factor=anneal_factor, time_cutoff=time_cutoff)
    model.train(was_training)
    return x, torch.stack(trace)
