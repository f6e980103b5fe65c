"""MCMC and optimisation samplers for energy models, batched on the device.

Every sampler takes `neg_energy(x) -> f(x) = -E(x)` (one value per sample) and starts `x`, and returns
(samples, info) where info holds tensors only (e.g. the Metropolis acceptance rate), so no host sync
happens inside the chain. `bounds=(-1, 1)` clamps images; None leaves the space unbounded.
`trace`, when a list, receives per step a (2, batch) tensor: the energy E = -f and ||grad_x f|| of every
chain at the state the step starts from (values the step computes anyway: no extra forward).
"""
import torch

from utils.sampling.sgld import input_grad, record_trace, sgld_sample

ANNEAL_FACTOR = 100.0  # --anneal_factor's default: the first annealed step is 100x the last
SAMPLERS = ("sgld", "jem", "tutorial", "langevin", "langevin_exact", "annealed", "flow", "gd_momentum", "adam", "mala",
            "hmc")
EVAL_MODE_SAMPLERS = ("jem",)  # JEM's sample_q runs the model in eval mode


def chains_in_train_mode(sampler, generative, ema_chains):
    """The mode training's chains run the model in, one rule for training and evaluation: train mode (BatchNorm on
    the chains' own batch, as upstream M-EBM) unless the sampler is JEM's, the chains sample the --ema average
    (--ema_chains), or the run has no p(x) term (chains for measurement only, which leave BatchNorm alone)."""
    return generative and not ema_chains and sampler not in EVAL_MODE_SAMPLERS


def _grad_f(neg_energy, x):
    """(f(x), grad_x f(x)) for a batch, without touching parameter gradients."""
    x = x.detach().requires_grad_(True)
    f = neg_energy(x)
    return f.detach(), input_grad(f, x)


def _clamp(x, bounds):
    return x if bounds is None else x.clamp(*bounds)


def tutorial_sample(neg_energy, x, n_steps, step_size=10.0, noise_std=0.005, grad_clip=0.03, bounds=(-1, 1),
                    trace=None):
    """The deep-energy-models tutorial step: add noise, then move along grad f clamped to +-grad_clip."""
    for _ in range(n_steps):
        x = _clamp(x + noise_std * torch.randn_like(x), bounds)
        f, g = _grad_f(neg_energy, x)
        record_trace(trace, f, g)
        x = _clamp(x + step_size * g.clamp(-grad_clip, grad_clip), bounds)
    return x.detach(), {}


def langevin_sample(neg_energy, x, n_steps, step_size, noise_std, bounds=None, trace=None):
    """Tempered Langevin: x <- x - step_size * grad E + noise_std * N(0, I), step and noise set independently."""
    for _ in range(n_steps):
        f, g = _grad_f(neg_energy, x)
        record_trace(trace, f, g)
        x = _clamp(x + step_size * g + noise_std * torch.randn_like(x), bounds)
    return x.detach(), {}


def flow_temperature_scale(t, cutoff):
    """The flow sampler's noise variance at time t, as a fraction of the tail's: 0 before `cutoff`, rising linearly
    to 1 at t = 1, then 1 (Energy Matching's epsilon(t) over epsilon_max)."""
    if t >= 1:
        return 1.0
    return 0.0 if t < cutoff else (t - cutoff) / (1 - cutoff)


def flow_sample(neg_energy, x, n_steps, dt, noise_std, time_cutoff=1.0, window=None, bounds=(-1, 1), trace=None):
    """Energy Matching's sampler: at time t = k dt, x <- x + dt grad f + noise_std sqrt(scale(t)) N (scale:
    flow_temperature_scale), a noise-free gradient flow that becomes Langevin at t = 1 (noise_std = sqrt(2 dt
    epsilon_max) in the paper's terms); images clamped once, after the chain. `window` = (first step, total) when
    the chain runs in pieces."""
    first = window[0] if window else 0
    for k in range(first, first + n_steps):
        f, g = _grad_f(neg_energy, x)
        record_trace(trace, f, g)
        x = x + dt * g
        scale = flow_temperature_scale(k * dt, time_cutoff)
        if scale > 0 and noise_std > 0:
            x = x + noise_std * scale ** 0.5 * torch.randn_like(x)
    return _clamp(x.detach(), bounds), {}


def anneal_scale(factor, step, total):
    """The annealed chain's scale at `step` of `total`: `factor` at the first step, falling geometrically to 1."""
    return factor ** (1 - step / (total - 1)) if total > 1 else 1.0


def annealed_langevin_sample(neg_energy, x, n_steps, step_size, noise_std, factor, window=None, bounds=None,
                             trace=None):
    """Langevin with step and noise annealed over the chain, as NCSN samples (Song & Ermon 2019): step t moves
    step_size * r_t along grad f with noise_std * sqrt(r_t), r_t = anneal_scale(factor, t, total), so the
    step-to-noise-variance ratio stays fixed while the moves shrink. `window` = (first step, total) when the
    chain is run in pieces."""
    first, total = window or (0, n_steps)
    for t in range(first, first + n_steps):
        r = anneal_scale(factor, t, total)
        f, g = _grad_f(neg_energy, x)
        record_trace(trace, f, g)
        x = _clamp(x + step_size * r * g + noise_std * r ** 0.5 * torch.randn_like(x), bounds)
    return x.detach(), {}


def langevin_exact_sample(neg_energy, x, n_steps, eps, bounds=None, trace=None):
    """Unadjusted Langevin with the exact scaling: x <- x - (eps^2 / 2) grad E + eps * N(0, I)."""
    return langevin_sample(neg_energy, x, n_steps, eps ** 2 / 2, eps, bounds, trace)


def gd_momentum_sample(neg_energy, x, n_steps, step_size, momentum=0.9, bounds=None, trace=None):
    """Gradient descent on E with heavy-ball momentum, no noise (a mode seeker, not a sampler)."""
    v = torch.zeros_like(x)
    for _ in range(n_steps):
        f, g = _grad_f(neg_energy, x)
        record_trace(trace, f, g)
        v = momentum * v + g
        x = _clamp(x + step_size * v, bounds)
    return x.detach(), {}


def adam_sample(neg_energy, x, n_steps, step_size, betas=(0.9, 0.999), eps=1e-8, bounds=None, trace=None):
    """Adam descent on E with respect to the samples, no noise; per-sample state, fully batched."""
    m, v = torch.zeros_like(x), torch.zeros_like(x)
    for t in range(1, n_steps + 1):
        f, g = _grad_f(neg_energy, x)
        record_trace(trace, f, g)
        g = -g  # gradient of E
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        m_hat, v_hat = m / (1 - betas[0] ** t), v / (1 - betas[1] ** t)
        x = _clamp(x - step_size * m_hat / (v_hat.sqrt() + eps), bounds)
    return x.detach(), {}


def _sum_dims(t):
    return t.flatten(1).sum(1)


def mala_sample(neg_energy, x, n_steps, eps, trace=None):
    """Metropolis-adjusted Langevin: exact-Langevin proposals accepted with the MH ratio (unbounded space)."""
    x = x.detach()
    f, g = _grad_f(neg_energy, x)
    accepted = torch.zeros((), device=x.device)
    for _ in range(n_steps):
        record_trace(trace, f, g)
        mean_fwd = x + eps ** 2 / 2 * g
        y = mean_fwd + eps * torch.randn_like(x)
        fy, gy = _grad_f(neg_energy, y)
        mean_bwd = y + eps ** 2 / 2 * gy
        log_q_fwd = -_sum_dims((y - mean_fwd) ** 2) / (2 * eps ** 2)
        log_q_bwd = -_sum_dims((x - mean_bwd) ** 2) / (2 * eps ** 2)
        log_alpha = fy - f + log_q_bwd - log_q_fwd
        accept = torch.rand_like(log_alpha).log() < log_alpha
        keep = accept.view(-1, *[1] * (x.dim() - 1))
        x, f, g = torch.where(keep, y, x), torch.where(accept, fy, f), torch.where(keep, gy, g)
        accepted = accepted + accept.float().mean()
    return x.detach(), {"acceptance": accepted / max(n_steps, 1)}


def hmc_sample(neg_energy, x, n_steps, step_size, n_leapfrog=10, trace=None):
    """Hamiltonian Monte Carlo: leapfrog trajectories with unit mass, accepted with the MH ratio."""
    x = x.detach()
    f, g = _grad_f(neg_energy, x)
    accepted = torch.zeros((), device=x.device)
    for _ in range(n_steps):
        record_trace(trace, f, g)
        p0 = torch.randn_like(x)
        p = p0 + step_size / 2 * g
        y, fy, gy = x, f, g
        for i in range(n_leapfrog):
            y = y + step_size * p
            fy, gy = _grad_f(neg_energy, y)
            if i < n_leapfrog - 1:
                p = p + step_size * gy
        p = p + step_size / 2 * gy
        # H = E + |p|^2 / 2 = -f + |p|^2 / 2
        log_alpha = (fy - _sum_dims(p ** 2) / 2) - (f - _sum_dims(p0 ** 2) / 2)
        accept = torch.rand_like(log_alpha).log() < log_alpha
        keep = accept.view(-1, *[1] * (x.dim() - 1))
        x, f, g = torch.where(keep, y, x), torch.where(accept, fy, f), torch.where(keep, gy, g)
        accepted = accepted + accept.float().mean()
    return x.detach(), {"acceptance": accepted / max(n_steps, 1)}


def run_sampler(name, model, x, n_steps, step_size, noise_std, y=None, bounds=(-1, 1), n_leapfrog=10, trace=None,
                anneal_factor=ANNEAL_FACTOR, window=None, time_cutoff=1.0):
    """Dispatch by --sampler name for an EnergyModel (f(x) or f(x)[y]); returns (samples, info). `anneal_factor` and
    `window`: see annealed_langevin_sample; `time_cutoff`: see flow_sample."""
    if name == "sgld":
        return sgld_sample(model, x, n_steps, step_size, noise_std, y=y, trace=trace), {}
    neg_energy = lambda z: model(z, y)[0]
    if name == "jem":  # JEM's sample_q: x += lr grad f + std N, the gradient unclamped and x never clamped
        return langevin_sample(neg_energy, x, n_steps, step_size, noise_std, None, trace)
    if name == "tutorial":
        return tutorial_sample(neg_energy, x, n_steps, step_size, noise_std, bounds=bounds, trace=trace)
    if name == "langevin":
        return langevin_sample(neg_energy, x, n_steps, step_size, noise_std, bounds, trace)
    if name == "annealed":
        return annealed_langevin_sample(neg_energy, x, n_steps, step_size, noise_std, anneal_factor, window, bounds,
                                        trace)
    if name == "flow":
        return flow_sample(neg_energy, x, n_steps, step_size, noise_std, time_cutoff, window, bounds, trace)
    if name == "langevin_exact":
        return langevin_exact_sample(neg_energy, x, n_steps, step_size, bounds, trace)
    if name == "gd_momentum":
        return gd_momentum_sample(neg_energy, x, n_steps, step_size, bounds=bounds, trace=trace)
    if name == "adam":
        return adam_sample(neg_energy, x, n_steps, step_size, bounds=bounds, trace=trace)
    if name == "mala":
        samples, info = mala_sample(neg_energy, x, n_steps, step_size, trace)
    elif name == "hmc":
        samples, info = hmc_sample(neg_energy, x, n_steps, step_size, n_leapfrog, trace)
    else:
        raise ValueError(f"unknown sampler {name!r}; expected one of {', '.join(SAMPLERS)}")
    # Metropolis samplers target the unbounded density; images are clamped only after the chain.
    return _clamp(samples, bounds), info
