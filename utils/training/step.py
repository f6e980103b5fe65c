"""One training iteration: draw the batches, run the chains, take the loss and one optimizer step (each part a
named torch.profiler range, for bench/train_step.py --loop)."""
from dataclasses import dataclass, field

import torch
from torch.profiler import record_function

from models.energy import weights_frozen
from utils.sampling.samplers import chains_in_train_mode, run_sampler
from utils.thermo import energies as thermo_energies
from utils.training.sam import SharpnessAware, running_statistics_frozen


@dataclass
class StepResult:
    loss: torch.Tensor
    logs: dict  # detached tensors, read only when the iteration reports
    x_q: torch.Tensor = None  # the chains' final samples
    y_q: torch.Tensor = None  # the labels they were drawn given
    trace: list = field(default=None)  # per-step chain energies and gradient norms, when asked for


def draw_chains(parts, y_q, want_trace):
    """(samples, sampler info, trace): --batch_size chains from the buffer (or fresh, --short_run) through
    --n_steps sampler steps in the sampler's precision, written back to the buffer. Starts are drawn in fp32."""
    args, buffer, precision = parts.args, parts.buffer, parts.precision
    model = parts.ema.model if args.ema_chains else parts.model
    if buffer is None:
        x0 = parts.start_fn(args.batch_size, y_q)
    else:
        x0, idx, steps = buffer.draw(args.batch_size, parts.start_fn, args.reinit_freq, y_q)
    if not chains_in_train_mode(args.sampler, parts.plan.generative, args.ema_chains):
        model.eval()
    trace = [] if want_trace else None
    with precision.sampler_autocast(), weights_frozen(model):
        x_q, info = run_sampler(args.sampler, model, precision.layout(x0), args.n_steps, args.sgld_lr, args.sgld_std,
                                y=y_q, n_leapfrog=args.n_leapfrog, trace=trace, anneal_factor=args.anneal_factor)
    parts.model.train()
    if buffer is not None:
        buffer.update(idx, x_q, steps + args.n_steps)
    return x_q, info, trace


def train_step(parts, iteration, lr, want_trace, guard):
    """One iteration at learning rate `lr`; non-finite samples or loss are flagged on `guard` (no host sync)."""
    args, plan, model, device = parts.args, parts.plan, parts.model, parts.device
    for group in parts.optim.param_groups:
        group["lr"] = lr
    x_p = y_p = x_l = y_l = x_q = y_q = trace = None
    if plan.generative:
        with record_function("step/data"):
            x_p, y_p = (t.to(device, non_blocking=True) for t in parts.px_stream.next())
        if args.sigma > 0:
            x_p = x_p + args.sigma * torch.randn_like(x_p)
    if plan.sampling:
        with record_function("step/chains"):
            y_q = plan.chain_labels(y_p, args.batch_size, device)
            x_q, sampler_info, trace = draw_chains(parts, y_q, want_trace)
        guard.flag(~torch.isfinite(x_q).all())
    if plan.classifying:
        with record_function("step/data"):
            x_l, y_l = (t.to(device, non_blocking=True) for t in parts.lab_stream.next())
    layout = parts.precision.layout

    def forward():
        with record_function("step/loss_forward"), parts.precision.loss_autocast():
            return parts.loss(layout(x_p), x_q, layout(x_l), y_l, y_data=y_p, y_samples=y_q, iteration=iteration)

    def backward(loss):
        with record_function("step/backward"):
            loss.backward()
            if args.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)

    loss, logs = forward()
    logs.update({f"sampler/{k}": v for k, v in sampler_info.items()} if plan.sampling else {})
    guard.flag(~torch.isfinite(loss) | (loss.detach().abs() > args.diverge_threshold))
    if parts.thermo is not None:
        e_before, y_thermo = thermo_energies(model, x_q, y_q)
    parts.optim.zero_grad(set_to_none=True)
    backward(loss)
    if isinstance(parts.optim, SharpnessAware):  # the same batches and chains again, at the perturbed weights
        parts.optim.first_step()
        with running_statistics_frozen(model):
            backward(forward()[0])
        parts.optim.second_step()
    else:
        with record_function("step/optimizer"):
            parts.optim.step()
    if parts.ema is not None:
        with record_function("step/optimizer"):
            parts.ema.update(model)
    if parts.thermo is not None:
        parts.thermo.record(iteration, e_before, thermo_energies(model, x_q, y_thermo)[0])
    return StepResult(loss, logs, x_q, y_q, trace)
