"""Time the training iteration against this machine's own peak, measured in the same run.

Step mode (default): the real training step (utils/training/step.py) on synthetic data at the published M-JEM sizes
(K=5, p(x) batch 64, labelled batch 128) under each precision policy, with and without torch.compile; each row gives
ms/iteration, achieved GFLOP/s and the multiple of the floor (the iteration's FLOPs at the measured convolution peak
of its dtypes). Loop mode (--loop): the whole loop of scripts/quickstart.sh's flags (streams, chains, loss, optimizer,
bookkeeping) on real Fashion-MNIST, with a torch.profiler breakdown.
    python bench/train_step.py --device cpu        # the quickstart CNN and WRN-16-2 at 1x28x28
    python bench/train_step.py --loop --iters 100  # the quickstart's real iteration
Prints a table and writes JSON (--out).
"""
import json
import os
import re
import shlex
import sys
import tempfile
import time
from types import SimpleNamespace

import torch
from torch.profiler import ProfilerActivity, profile, record_function, schedule

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import train_maebm  # noqa: E402
from models import build_model  # noqa: E402
from models.energy import compile_backbone  # noqa: E402
from utils.data import dataset_info  # noqa: E402
from utils.distributed import DistInfo  # noqa: E402
from utils.errors import ArgumentParser, UserError, nonneg_int, positive_int, run_cli  # noqa: E402
from utils.precision import compile_wanted, precision_policy  # noqa: E402
from utils.sampling.buffer import ReplayBuffer  # noqa: E402
from utils.sampling.starts import make_start_fn  # noqa: E402
from utils.training import JointLoss  # noqa: E402
from utils.training.guard import DivergenceGuard  # noqa: E402
from utils.training.plan import make_plan  # noqa: E402
from utils.training.setup import architecture, make_model_and_optimizer, prepare_model  # noqa: E402
from utils.training.step import train_step  # noqa: E402

# policy: (--amp, --amp_sampler, --channels_last); each is timed eager and, with --compile_too, compiled
POLICIES = {"fp32": ("off", "off", "off"), "fp32_cl": ("off", "off", "on"), "bf16_loss": ("on", "off", "on"),
            "bf16_all": ("on", "on", "on")}
PHASES = ("step/data", "step/chains", "step/loss_forward", "step/backward", "step/optimizer", "loop/bookkeeping")


def parse(argv=None):
    p = ArgumentParser("bench/train_step.py", description=__doc__.split("\n")[0],
                       example="python bench/train_step.py --device cpu --iters 5")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--loop", action="store_true", help="time the quickstart's real loop instead of the step alone")
    p.add_argument("--nets", nargs="+", default=None, metavar="MODEL-DEPTH-WIDTH",
                   help="networks timed (default: wrn-28-10 on CUDA; cnn-1-1 and wrn-16-2 on CPU)")
    p.add_argument("--image_size", type=positive_int, default=None, help="default: 32 on CUDA, 28 on CPU")
    p.add_argument("--channels", type=positive_int, default=None, help="default: 3 on CUDA, 1 on CPU")
    p.add_argument("--batch_size", type=positive_int, default=64)
    p.add_argument("--pyx_batch_size", type=positive_int, default=128)
    p.add_argument("--n_steps", type=positive_int, default=5)
    p.add_argument("--iters", type=positive_int, default=None, help="timed iterations (default: 30 on CUDA, 5 on CPU; "
                                                                   "--loop: 100)")
    p.add_argument("--warmup", type=nonneg_int, default=None,
                   help="untimed iterations first (default: 10 on CUDA, 2 on CPU; --loop: 20, and 60 compiled)")
    p.add_argument("--policies", nargs="+", default=None, choices=list(POLICIES), help="default: all")
    p.add_argument("--compile", default="both", choices=["off", "on", "both"], help="eager, compiled, or each")
    p.add_argument("--peak_size", type=positive_int, default=None,
                   help="GEMM side of the peak measurement (default: 8192 on CUDA, 2048 on CPU)")
    p.add_argument("--data_root", default=os.path.join(ROOT, "data"), help="--loop: where Fashion-MNIST is")
    p.add_argument("--center_dir", default=os.path.join(ROOT, "data", "centers"), help="--loop: the fitted Gaussians")
    p.add_argument("--train_flags", default="", help="--loop: train_maebm.py flags added after the quickstart's, "
                                                      "e.g. \"--channels_last on --compile\"")
    p.add_argument("--out", default="bench/train_step.json")
    a = p.parse_args(argv)
    a.extra = shlex.split(a.train_flags)
    cuda = a.device.startswith("cuda")
    a.nets = [parse_net(n) for n in a.nets or (["wrn-28-10"] if cuda else ["cnn-1-1", "wrn-16-2"])]
    a.image_size = a.image_size or (32 if cuda else 28)
    a.channels = a.channels or (3 if cuda else 1)
    a.iters = a.iters or (100 if a.loop else 30 if cuda else 5)
    a.policies = a.policies or list(POLICIES)
    a.peak_size = a.peak_size or (8192 if cuda else 2048)
    return a


def parse_net(text):
    model, _, rest = text.partition("-")
    depth, _, width = rest.partition("-")
    if not (depth.isdigit() and width.isdigit()):
        raise UserError(f"--nets: expected MODEL-DEPTH-WIDTH such as wrn-16-2 or cnn-1-1, got {text!r}")
    return model, int(depth), int(width)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, n, warmup, device):
    for _ in range(warmup):
        fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / n


def machine_peak(device, size):
    """GFLOP/s of this machine now: a size^3 GEMM and a 3x3 convolution (64 channels, 14x14, batch 256,
    channels_last), fp32 and bf16."""
    peak = {}
    for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
        peak[f"gemm_{name}"] = 2 * size ** 3 / timed(lambda: a @ b, 5, 2, device) / 1e9
        x = torch.randn(256, 64, 14, 14, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        conv = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False).to(device, dtype, memory_format=torch.channels_last)
        with torch.no_grad():
            peak[f"conv_{name}"] = 2 * 256 * 64 * 64 * 9 * 14 * 14 / timed(lambda: conv(x), 10, 3, device) / 1e9
    return peak


class SyntheticStream:
    """A data stream of fixed random images and labels, standing in for the device streams."""

    def __init__(self, n, shape, device):
        self.batch = (torch.rand(n, *shape, device=device) * 2 - 1, torch.randint(0, 10, (n,), device=device))

    def next(self):
        return self.batch


def setup(a, net, device, policy, compiled):
    """The real training step on the published M-JEM flags at the bench's sizes; returns (model, one iteration)."""
    torch.manual_seed(0)
    amp, amp_sampler, channels_last = POLICIES[policy]
    model_name, depth, width = net
    flags = train_maebm.build_parser().parse_args(
        ["--model", model_name, "--depth", str(depth), "--width", str(width), "--batch_size", str(a.batch_size),
         "--pyx_batch_size", str(a.pyx_batch_size), "--n_steps", str(a.n_steps), "--sgld_std", "0.001",
         "--l2_coeff", "0.5", "--uncond", "--init", "u", "--lr", "1e-4", "--device", device.type, "--amp", amp,
         "--amp_sampler", amp_sampler, "--channels_last", channels_last])
    shape = (a.channels, a.image_size, a.image_size)
    dist = DistInfo()
    model, optim = make_model_and_optimizer(flags, architecture(flags, a.channels, a.image_size, 10), device, dist)
    precision = precision_policy(flags.amp, flags.amp_sampler, flags.channels_last, device)
    prepare_model(model, precision, None, device, fresh=False)
    if compiled:
        compile_backbone(model)
    start_fn = make_start_fn(flags, shape, device, None)
    parts = SimpleNamespace(args=flags, plan=make_plan(flags, 10, 1), model=model, optim=optim,
                            buffer=ReplayBuffer(start_fn(10000)), start_fn=start_fn, thermo=None, ema=None,
                            precision=precision, device=device, px_stream=SyntheticStream(a.batch_size, shape, device),
                            lab_stream=SyntheticStream(a.pyx_batch_size, shape, device),
                            loss=JointLoss(model, 1.0, 1.0, 0.5))
    guard = DivergenceGuard(flags, device, dist)
    return model, lambda: train_step(parts, 0, 1e-4, False, guard)


def iteration_flops(model, shape, a, device):
    """(forward FLOPs per image, (chain FLOPs, loss FLOPs) per iteration): an SGLD image-step counts forward +
    input-gradient backward (2x), each trained image (data, samples, labelled) forward + full backward (3x)."""
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *shape, device=device))
    per_image = counter.get_total_flops()
    return per_image, (per_image * 2 * a.n_steps * a.batch_size, per_image * 3 * (2 * a.batch_size + a.pyx_batch_size))


def floor_ms(chain_flops, loss_flops, policy, peak):
    """The iteration at this machine's convolution peak of each part's dtype."""
    amp, amp_sampler, _ = POLICIES[policy]
    rate = lambda on: peak["conv_bf16" if on == "on" else "conv_fp32"] * 1e9
    return 1000 * (chain_flops / rate(amp_sampler) + loss_flops / rate(amp))


def step_rows(a, device, peak):
    rows = []
    shape = (a.channels, a.image_size, a.image_size)
    for net in a.nets:
        for policy in a.policies:
            for compiled in {"off": [False], "on": [True], "both": [False, True]}[a.compile]:
                model, iteration = setup(a, net, device, policy, compiled)
                model.train()
                warmup = a.warmup if a.warmup is not None else (10 if device.type == "cuda" else 2) + 3 * compiled
                sec = timed(iteration, a.iters, warmup, device)
                per_image, (chains, loss) = iteration_flops(model, shape, a, device)
                floor = floor_ms(chains, loss, policy, peak)
                rows.append({"net": "-".join(map(str, net)), "policy": policy, "compile": compiled,
                             "ms_per_iter": 1000 * sec, "forward_flop_per_image": per_image,
                             "flop_per_iter": chains + loss, "gflops": (chains + loss) / sec / 1e9,
                             "floor_ms": floor, "floor_multiple": 1000 * sec / floor})
    return rows


def quickstart_flags(data_root, center_dir, save_dir):
    """train_maebm.py's flags in scripts/quickstart.sh, read from the script itself."""
    text = open(os.path.join(ROOT, "scripts", "quickstart.sh")).read().replace("\\\n", " ")
    line = next(ln for ln in text.splitlines() if re.search(r'"\$PY" train_maebm\.py --dataset', ln))
    words = shlex.split(line.split("train_maebm.py", 1)[1])
    subst = {"$DATA_ROOT": data_root, "$CENTER_DIR": center_dir, "$RUN": save_dir}
    return [subst.get(w, w) for w in words if w != "$@"]


def loop_row(a, device, peak):
    """The quickstart's loop (train_maebm.train as it runs) timed between iteration starts after warm-up, then a
    torch.profiler breakdown of as many iterations in a second run."""
    flags = train_maebm.build_parser().parse_args(quickstart_flags("", "", "") + a.extra)
    compiled = compile_wanted(flags.compile, device)

    def run(profiler=None):
        starts = []
        step, finish = train_maebm.train_step, train_maebm.finish_iteration

        def timed_step(*args, **kw):
            starts.append(time.perf_counter())
            if profiler is not None:
                profiler.step()
            return step(*args, **kw)

        def labelled_finish(*args, **kw):
            with record_function("loop/bookkeeping"):
                return finish(*args, **kw)
        with tempfile.TemporaryDirectory() as tmp:
            flags = quickstart_flags(a.data_root, a.center_dir, os.path.join(tmp, "run"))
            flags += ["--max_iters", str(warmup + a.iters + 1), "--device", device.type, *a.extra]
            train_maebm.train_step, train_maebm.finish_iteration = timed_step, labelled_finish
            try:
                train_maebm.main(flags)
            finally:
                train_maebm.train_step, train_maebm.finish_iteration = step, finish
        return starts
    warmup = a.warmup if a.warmup is not None else (60 if compiled else 20)
    starts = run()
    ms = 1000 * (starts[-1] - starts[warmup]) / a.iters
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, schedule=schedule(wait=warmup, warmup=1, active=a.iters - 1, repeat=1)) as prof:
        run(prof)
    events = {e.key: e for e in prof.key_averages()}
    total = sum(events[k].cpu_time_total for k in PHASES if k in events) or 1.0
    breakdown = {k: round(100 * events[k].cpu_time_total / total, 1) for k in PHASES if k in events}
    ch, size, _ = dataset_info(flags.dataset)
    model = build_model(flags.model, 10, ch, flags.depth, flags.width, flags.norm, image_size=size).to(device)
    _, (chains, loss) = iteration_flops(model, (ch, size, size), flags, device)
    policy = "bf16_all" if flags.amp_sampler == "on" else "bf16_loss" if flags.amp == "on" else "fp32"
    floor = floor_ms(chains, loss, policy, peak)
    return {"net": "quickstart", "policy": a.train_flags or "quickstart flags", "compile": compiled,
            "ms_per_iter": ms, "flop_per_iter": chains + loss, "floor_ms": floor, "floor_multiple": ms / floor,
            "breakdown_percent": breakdown}


def main(argv=None):
    a = parse(argv)
    device = torch.device(a.device)
    peak = machine_peak(device, a.peak_size)
    rows = [loop_row(a, device, peak)] if a.loop else step_rows(a, device, peak)
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "threads": torch.get_num_threads(), "image": [a.channels, a.image_size],
            "batch_size": a.batch_size, "pyx_batch_size": a.pyx_batch_size, "n_steps": a.n_steps,
            "peak_gflops": peak, "rows": rows}
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as fh:
        json.dump(info, fh, indent=2)
    print(f"{info['device']}, torch {info['torch']}, {info['threads']} threads; measured peak GFLOP/s: " +
          ", ".join(f"{k} {v:.0f}" for k, v in peak.items()))
    if a.loop:
        r = rows[0]
        print(f"quickstart loop ({r['policy']}{', compiled' if r['compile'] else ''}): {r['ms_per_iter']:.1f} "
              f"ms/iteration, {r['floor_multiple']:.2f}x the floor of {r['floor_ms']:.1f} ms; profile: " +
              ", ".join(f"{k} {v}%" for k, v in r["breakdown_percent"].items()))
    else:
        print(f"K={a.n_steps}, p(x) batch {a.batch_size}, labelled batch {a.pyx_batch_size}, images "
              f"{a.channels}x{a.image_size}^2")
        print(f"{'net':<11}{'policy':<11}{'compile':<9}{'ms/iter':>9}{'speed-up':>9}{'GFLOP/s':>9}{'floor ms':>9}"
              f"{'x floor':>8}")
        for r in rows:
            base = next(b for b in rows if b["net"] == r["net"])
            print(f"{r['net']:<11}{r['policy']:<11}{'on' if r['compile'] else 'off':<9}{r['ms_per_iter']:>9.1f}"
                  f"{base['ms_per_iter'] / r['ms_per_iter']:>8.2f}x{r['gflops']:>9.1f}{r['floor_ms']:>9.1f}"
                  f"{r['floor_multiple']:>8.2f}")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
