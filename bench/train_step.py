"""Time the published M-JEM iteration (WRN-28-10, K=5, p(x) batch 64, labelled batch 128) on synthetic data under
each precision policy (utils/precision.py), and the SGLD sampler alone.

Variants: fp32_eager (as published); bf16_loss (bf16 loss, fp32 chains, channels_last); bf16_all (the chains in
bf16 too); fast (bf16_all with torch.compile).
    python bench/train_step.py                      # CUDA: the published sizes
    python bench/train_step.py --device cpu         # CPU: the quickstart CNN and WRN-16-2, fp32 against bf16_loss
Prints a table and writes JSON (--out).
"""
import json
import os
import sys
import time
from types import SimpleNamespace

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from train_maebm import build_parser as train_parser  # noqa: E402
from utils.distributed import DistInfo  # noqa: E402
from utils.precision import precision_policy  # noqa: E402
from utils.sampling.buffer import ReplayBuffer  # noqa: E402
from utils.sampling.samplers import run_sampler  # noqa: E402
from utils.sampling.starts import make_start_fn  # noqa: E402
from utils.training import JointLoss  # noqa: E402
from utils.training.guard import DivergenceGuard  # noqa: E402
from utils.training.plan import make_plan  # noqa: E402
from utils.training.setup import architecture, make_model_and_optimizer, prepare_model  # noqa: E402
from utils.training.step import train_step  # noqa: E402
from utils.errors import ArgumentParser  # noqa: E402


# variant: (--amp, --amp_sampler, --channels_last, --compile)
VARIANTS = {"fp32_eager": ("off", "off", "off", False), "bf16_loss": ("on", "off", "on", False),
            "bf16_all": ("on", "on", "on", False), "fast": ("on", "on", "on", True)}


def parse(argv=None):
    p = ArgumentParser("bench/train_step.py", description=__doc__.split("\n")[0],
                       example="python bench/train_step.py --device cpu --iters 5")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--nets", nargs="+", default=None, metavar="MODEL-DEPTH-WIDTH",
                   help="networks timed in this run (default: wrn-28-10 on CUDA; cnn-1-1 and wrn-16-2 on CPU)")
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--pyx_batch_size", type=int, default=128)
    p.add_argument("--n_steps", type=int, default=5)
    p.add_argument("--iters", type=int, default=None, help="timed iterations (default: 30 on CUDA, 3 on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed iterations first (default: 10 on CUDA, 1 on CPU)")
    p.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS),
                   help="default: fp32_eager, bf16_loss, fast on CUDA; fp32_eager, bf16_loss on CPU")
    p.add_argument("--sampler_batches", nargs="+", type=int, default=[64, 256])
    p.add_argument("--peak_tflops", type=float, default=800.0, help="bf16 peak for the %% column (about 800 on the H100)")
    p.add_argument("--out", default="bench/train_step.json")
    a = p.parse_args(argv)
    cuda = a.device.startswith("cuda")
    a.nets = [parse_net(n) for n in a.nets or (["wrn-28-10"] if cuda else ["cnn-1-1", "wrn-16-2"])]
    a.iters = a.iters or (30 if cuda else 3)
    a.warmup = a.warmup if a.warmup is not None else (10 if cuda else 1)
    a.variants = a.variants or (["fp32_eager", "bf16_loss", "fast"] if cuda else ["fp32_eager", "bf16_loss"])
    return a


def parse_net(text):
    model, _, rest = text.partition("-")
    depth, _, width = rest.partition("-")
    if not (depth.isdigit() and width.isdigit()):
        raise SystemExit(f"--nets: expected MODEL-DEPTH-WIDTH such as wrn-16-2 or cnn-1-1, got {text!r}")
    return model, int(depth), int(width)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


class SyntheticStream:
    """A data stream of fixed random images and labels, standing in for the loaders."""

    def __init__(self, n, shape, device, precision):
        self.batch = (precision.layout(torch.rand(n, *shape, device=device) * 2 - 1),
                      torch.randint(0, 10, (n,), device=device))

    def next(self):
        return self.batch


def setup(a, net, device, variant):
    """The real training step (utils/training/step.py) on the published M-JEM flags at the bench's sizes."""
    torch.manual_seed(0)
    amp, amp_sampler, channels_last, compiled = VARIANTS[variant]
    model_name, depth, width = net
    flags = train_parser().parse_args(
        ["--model", model_name, "--depth", str(depth), "--width", str(width), "--batch_size", str(a.batch_size),
         "--pyx_batch_size", str(a.pyx_batch_size), "--n_steps", str(a.n_steps), "--sgld_std", "0.001",
         "--l2_coeff", "0.5", "--uncond", "--init", "u", "--lr", "1e-4", "--device", device.type, "--amp", amp,
         "--amp_sampler", amp_sampler, "--channels_last", channels_last] + (["--compile"] if compiled else []))
    shape = (a.channels, a.image_size, a.image_size)
    dist = DistInfo()
    model, optim = make_model_and_optimizer(flags, architecture(flags, a.channels, a.image_size, 10), device, dist)
    precision = precision_policy(flags.amp, flags.amp_sampler, flags.channels_last, device)
    prepare_model(model, flags, precision, None, device, fresh=False)
    start_fn = make_start_fn(flags, shape, device, None)
    parts = SimpleNamespace(args=flags, plan=make_plan(flags, 10, 1), model=model, optim=optim,
                            buffer=ReplayBuffer(start_fn(10000)), start_fn=start_fn, thermo=None, ema=None,
                            precision=precision,
                            device=device, px_stream=SyntheticStream(a.batch_size, shape, device, precision),
                            lab_stream=SyntheticStream(a.pyx_batch_size, shape, device, precision),
                            loss=JointLoss(model, 1.0, 1.0, 0.5))
    guard = DivergenceGuard(flags, device, dist)

    def sampler(bs):
        x0 = precision.layout(start_fn(bs))
        with precision.sampler_autocast():
            return run_sampler("sgld", model, x0, a.n_steps, 1.0, 0.001)

    return model, lambda: train_step(parts, 0, 1e-4, False, guard), sampler, parts.px_stream.batch[0]


def timed(fn, n, warmup, device):
    for _ in range(warmup):
        fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / n


def iteration_flops(model, x, a):
    """Forward FLOPs per image (counted) x images: SGLD steps count forward + input-gradient backward (2x),
    the training forwards on data, samples and labelled images count forward + full backward (3x)."""
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x[:1])
    per_image = counter.get_total_flops()
    return per_image, per_image * (2 * a.n_steps * a.batch_size + 3 * (2 * a.batch_size + a.pyx_batch_size))


def time_variant(a, net, device, variant):
    model, iteration, sampler, x_p = setup(a, net, device, variant)
    model.train()
    sec = timed(iteration, a.iters, a.warmup, device)
    per_image, flops = iteration_flops(model, x_p, a)
    row = {"net": "-".join(map(str, net)), "variant": variant, "ms_per_iter": 1000 * sec,
           "forward_flop_per_image": per_image, "flop_per_iter": flops, "tflops": flops / sec / 1e12,
           "hours_200_epochs_390_iters": sec * 390 * 200 / 3600}
    for bs in a.sampler_batches:
        s = timed(lambda: sampler(bs), max(1, a.iters // 3), max(1, a.warmup // 3), device)
        row[f"sgld_image_steps_per_s_bs{bs}"] = bs * a.n_steps / s
    return row


def main(argv=None):
    a = parse(argv)
    device = torch.device(a.device)
    rows = [time_variant(a, net, device, variant) for net in a.nets for variant in a.variants]
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "threads": torch.get_num_threads(), "image": [a.channels, a.image_size],
            "batch_size": a.batch_size, "pyx_batch_size": a.pyx_batch_size, "n_steps": a.n_steps,
            "peak_tflops_bf16": a.peak_tflops, "rows": rows}
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as fh:
        json.dump(info, fh, indent=2)
    print(f"{info['device']}, torch {info['torch']}, {info['threads']} threads, K={a.n_steps}, "
          f"p(x) batch {a.batch_size}, labelled batch {a.pyx_batch_size}, images {a.channels}x{a.image_size}^2")
    print(f"{'net':<11}{'variant':<12}{'ms/iter':>10}{'speed-up':>9}{'TFLOP/s':>10}{'% peak':>8}{'h/200ep':>9}" +
          "".join(f"{'SGLD img-step/s bs' + str(b):>24}" for b in a.sampler_batches))
    for r in rows:
        base = next(b for b in rows if b["net"] == r["net"])
        print(f"{r['net']:<11}{r['variant']:<12}{r['ms_per_iter']:>10.1f}{base['ms_per_iter'] / r['ms_per_iter']:>8.2f}x"
              f"{r['tflops']:>10.2f}{100 * r['tflops'] / a.peak_tflops:>8.1f}{r['hours_200_epochs_390_iters']:>9.2f}" +
              "".join(f"{r[f'sgld_image_steps_per_s_bs{b}']:>24.0f}" for b in a.sampler_batches))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
