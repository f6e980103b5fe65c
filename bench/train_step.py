"""Time the published M-JEM iteration (WRN-28-10, K=5, p(x) batch 64, labelled batch 128) on synthetic data,
fp32-eager against the fast path (bf16 autocast, channels_last, torch.compile), and the SGLD sampler alone.

    python bench/train_step.py                      # CUDA: the published sizes
    python bench/train_step.py --device cpu         # smoke run with a small model
Prints a table and writes JSON (--out).
"""
import argparse
import json
import os
import sys
import time
from types import SimpleNamespace

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from train_maebm import build_parser as train_parser  # noqa: E402
from utils.distributed import DistInfo  # noqa: E402
from utils.sampling.buffer import ReplayBuffer  # noqa: E402
from utils.sampling.samplers import run_sampler  # noqa: E402
from utils.sampling.starts import make_start_fn  # noqa: E402
from utils.training import JointLoss  # noqa: E402
from utils.training.guard import DivergenceGuard  # noqa: E402
from utils.training.plan import make_plan  # noqa: E402
from utils.training.setup import FastPath, architecture, make_model_and_optimizer, prepare_model  # noqa: E402
from utils.training.step import train_step  # noqa: E402


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--model", default=None, help="default: wrn on CUDA, cnn on CPU")
    p.add_argument("--depth", type=int, default=28)
    p.add_argument("--width", type=int, default=None, help="default: 10 on CUDA, 1 on CPU")
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--pyx_batch_size", type=int, default=128)
    p.add_argument("--n_steps", type=int, default=5)
    p.add_argument("--iters", type=int, default=None, help="timed iterations (default: 30 on CUDA, 3 on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed iterations first (default: 10 on CUDA, 1 on CPU)")
    p.add_argument("--variants", nargs="+", default=None, help="fp32_eager and/or fast (default: both on CUDA)")
    p.add_argument("--sampler_batches", nargs="+", type=int, default=[64, 256])
    p.add_argument("--peak_tflops", type=float, default=800.0, help="bf16 peak for the %% column (about 800 on the H100)")
    p.add_argument("--out", default="bench/train_step.json")
    a = p.parse_args()
    cuda = a.device.startswith("cuda")
    a.model = a.model or ("wrn" if cuda else "cnn")
    a.width = a.width or (10 if cuda else 1)
    a.iters = a.iters or (30 if cuda else 3)
    a.warmup = a.warmup if a.warmup is not None else (10 if cuda else 1)
    a.variants = a.variants or (["fp32_eager", "fast"] if cuda else ["fp32_eager"])
    return a


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


class SyntheticStream:
    """A data stream of fixed random images and labels, standing in for the loaders."""

    def __init__(self, n, shape, device, fast):
        self.batch = (fast.layout(torch.rand(n, *shape, device=device) * 2 - 1), torch.randint(0, 10, (n,), device=device))

    def next(self):
        return self.batch


def setup(a, device, fast):
    """The real training step (utils/training/step.py) on the published M-JEM flags at the bench's sizes."""
    torch.manual_seed(0)
    flags = train_parser().parse_args(
        ["--model", a.model, "--depth", str(a.depth), "--width", str(a.width), "--batch_size", str(a.batch_size),
         "--pyx_batch_size", str(a.pyx_batch_size), "--n_steps", str(a.n_steps), "--sgld_std", "0.001",
         "--l2_coeff", "0.5", "--uncond", "--init", "u", "--lr", "1e-4", "--device", device.type,
         "--amp", "on" if fast else "off", "--channels_last", "on" if fast else "off"] + (["--compile"] if fast else []))
    shape = (a.channels, a.image_size, a.image_size)
    dist = DistInfo()
    model, optim = make_model_and_optimizer(flags, architecture(flags, a.channels, a.image_size, 10), device, dist)
    path = FastPath(flags, device)
    prepare_model(model, flags, path, None, device, fresh=False)
    start_fn = make_start_fn(flags, shape, device, None)
    parts = SimpleNamespace(args=flags, plan=make_plan(flags, 10, 1), model=model, optim=optim,
                            buffer=ReplayBuffer(start_fn(10000)), start_fn=start_fn, thermo=None, fast=path,
                            device=device, px_stream=SyntheticStream(a.batch_size, shape, device, path),
                            lab_stream=SyntheticStream(a.pyx_batch_size, shape, device, path),
                            loss=JointLoss(model, 1.0, 1.0, 0.5))
    guard = DivergenceGuard(flags, device, dist)

    def sampler(bs):
        with path.autocast():
            return run_sampler("sgld", model, path.layout(start_fn(bs)), a.n_steps, 1.0, 0.001)

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


def main():
    a = parse()
    device = torch.device(a.device)
    rows = []
    for variant in a.variants:
        fast = variant == "fast"
        model, iteration, sampler, x_p = setup(a, device, fast)
        model.train()
        sec = timed(iteration, a.iters, a.warmup, device)
        per_image, flops = iteration_flops(model, x_p, a)
        row = {"variant": variant, "ms_per_iter": 1000 * sec, "forward_flop_per_image": per_image, "flop_per_iter": flops,
               "tflops": flops / sec / 1e12, "hours_200_epochs_390_iters": sec * 390 * 200 / 3600}
        for bs in a.sampler_batches:
            s = timed(lambda: sampler(bs), max(1, a.iters // 3), max(1, a.warmup // 3), device)
            row[f"sgld_image_steps_per_s_bs{bs}"] = bs * a.n_steps / s
        rows.append(row)
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "model": f"{a.model}-{a.depth}-{a.width}", "image": [a.channels, a.image_size],
            "batch_size": a.batch_size, "pyx_batch_size": a.pyx_batch_size, "n_steps": a.n_steps,
            "peak_tflops_bf16": a.peak_tflops, "rows": rows}
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as fh:
        json.dump(info, fh, indent=2)
    print(f"{info['device']}, torch {info['torch']}, {info['model']}, K={a.n_steps}, "
          f"p(x) batch {a.batch_size}, labelled batch {a.pyx_batch_size}")
    print(f"{'variant':<12}{'ms/iter':>10}{'TFLOP/s':>10}{'% peak':>8}{'h/200ep':>9}" +
          "".join(f"{'SGLD img-step/s bs' + str(b):>24}" for b in a.sampler_batches))
    for r in rows:
        print(f"{r['variant']:<12}{r['ms_per_iter']:>10.1f}{r['tflops']:>10.2f}{100 * r['tflops'] / a.peak_tflops:>8.1f}"
              f"{r['hours_200_epochs_390_iters']:>9.2f}" +
              "".join(f"{r[f'sgld_image_steps_per_s_bs{b}']:>24.0f}" for b in a.sampler_batches))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
