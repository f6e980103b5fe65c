"""Train M-EBM (p(x)) and M-JEM (p(x) + p(y|x)) with SGLD chains started from a fitted Gaussian.

Published recipes (scripts/maebm_cifar10.sh, scripts/majem_cifar10.sh) run unchanged.
Example: python train_maebm.py --dataset fashionmnist --model cnn --width 1 --n_epochs 2 --save_dir runs/fm
"""
import contextlib
import json
import os
import signal
import sys
import time
from types import SimpleNamespace

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Subset
from tqdm import tqdm

from models import MODELS, NORMS, build_model, load_weights
from models.norms import ActNorm
from utils.buffer import ReplayBuffer, uniform_start
from utils.chain_diag import chain_summary, long_run_chains, plot_chain_trace
from utils.chain_starts import make_start_fn
from utils.checkpoint import (CheckpointDir, atomic_torch_save, atomic_write_text, load_checkpoint, rng_state,
                              set_rng_state)
from utils.data import (DATASETS, UNLABELLED, dataset_info, dataset_labels, image_transform, labelled_subset, load_dataset,
                        make_loader, split_train_valid)
from utils.distributed import (any_rank, broadcast_object, gather_cat, gather_objects, init_distributed,
                               max_parameter_difference, on_main, shutdown)
from utils.errors import (ArgumentParser, UserError, int_or_minus_one, nonneg_float, nonneg_int, positive_float,
                          positive_int, probability, run_cli)
from utils.run_dir import RunLogger, prepare_run_dir, save_grid
from utils.samplers import SAMPLERS, run_sampler
from utils.thermo import ThermoRecorder
from utils.thermo import energies as thermo_energies
from utils.thermo import to_csv as thermo_csv
from utils.upstream import adopt_upstream_checkpoint
from utils.training import (CONDITIONAL_OBJECTIVES, OBJECTIVES, JointLoss, ResumableStream, evaluate_classifier,
                            input_grad_norm, lr_at)

NOOP = "accepted for upstream compatibility; has no effect here"
ARCH_KEYS = ("dataset", "model", "depth", "width", "norm", "uncond", "spectral_norm")


def build_parser():
    p = ArgumentParser("train_maebm.py", description=__doc__.split("\n")[0])
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="fashionmnist", choices=list(DATASETS))
    g.add_argument("--data_root", default="./data", help="dataset root; Fashion-MNIST/MNIST are set up here offline")
    g.add_argument("--download", action="store_true", help="let torchvision download a missing dataset (needs network)")
    g.add_argument("--n_valid", type=nonneg_int, default=0,
                   help="training images held out for validation and best_valid_ckpt.pt (0: none)")
    g.add_argument("--labels_per_class", type=int_or_minus_one, default=-1,
                   help="labelled images per class for p(y|x) (-1 or 0: all)")
    g.add_argument("--workers", type=int_or_minus_one, default=-1, help="data-loader workers (-1: 4 on CUDA, 0 on CPU)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--lr", type=positive_float, default=0.1)
    g.add_argument("--decay_epochs", nargs="+", type=nonneg_int, default=[60, 120, 180],
                   help="decay learning rate by decay_rate at these epochs")
    g.add_argument("--decay_rate", type=positive_float, default=0.2, help="learning rate decay multiplier")
    g.add_argument("--decay_every", type=nonneg_int, default=0,
                   help="decay every N epochs instead of at --decay_epochs (e.g. 1 with --decay_rate 0.97: StepLR)")
    g.add_argument("--adam_beta1", type=float, default=0.9, help="Adam's beta1 (the tutorial recipe uses 0)")
    g.add_argument("--clf_only", action="store_true", help="only train the classifier head")
    g.add_argument("--optimizer", choices=["adam", "sgd"], default="sgd")
    g.add_argument("--batch_size", type=positive_int, default=64, help="p(x) batch: data and SGLD chains")
    g.add_argument("--pyx_batch_size", type=positive_int, default=128,
                   help="labelled batch for p(y|x) (random crop + flip); an epoch is one pass over it, "
                        "also when --pyx is 0 (as upstream)")
    g.add_argument("--n_epochs", type=positive_int, default=200)
    g.add_argument("--max_iters", type=nonneg_int, default=0, help="stop after this many iterations in all (0: no limit)")
    g.add_argument("--warmup_iters", type=int_or_minus_one, default=-1,
                   help="iterations of linear learning-rate warm-up (-1 or 0: none, upstream's default)")
    g.add_argument("--weight_decay", type=nonneg_float, default=5e-4)
    g.add_argument("--clip_grad", type=nonneg_float, default=0.0, help="clip the parameter-gradient norm to this (0: off)")

    g = p.add_argument_group("loss")
    g.add_argument("--px", type=nonneg_float, default=1.0, help="weight of the p(x) (contrastive) loss")
    g.add_argument("--pyx", type=nonneg_float, default=1.0, help="weight of the p(y|x) cross-entropy")
    g.add_argument("--l2_coeff", type=nonneg_float, default=0.0,
                   help="energy regulariser l2 * (mean f(x+)^2 + (mean f(x-))^2)")
    g.add_argument("--objective", default="maebm", choices=list(OBJECTIVES),
                   help="maebm/jem/m_ebm: marginal contrastive divergence on E(x) = -logsumexp f(x) (or the --uncond "
                        "head) plus pyx x cross-entropy; j_ebm: joint CD on E(x,y) = -f(x)[y], chains drawn given the "
                        "data labels; gcl: j_ebm minus --gamma x marginal CD; dcl: cross-entropy only")
    g.add_argument("--gamma", type=float, default=1.0, help="gcl: weight of the marginal term that is unlearned")
    g.add_argument("--reg", default="asym", choices=["asym", "sym"],
                   help="energy regulariser with weight --l2_coeff: asym (upstream) l2 (mean f(x+)^2 + (mean f(x-))^2); "
                        "sym l2 (mean E(x+)^2 + mean E(x-)^2)")
    g.add_argument("--sigma", type=nonneg_float, default=0.0, help="std of Gaussian noise added to p(x) data")
    g.add_argument("--rho", type=float, default=2, help=NOOP)
    g.add_argument("--eps", type=float, default=1, help=NOOP)

    g = p.add_argument_group("network")
    g.add_argument("--model", default="wrn", choices=list(MODELS),
                   help="wrn: Wide-ResNet; cnn: small 4-conv CNN; tutorial_cnn: the tutorial's Swish CNN; "
                        "conv5: plain 5-conv LeakyReLU net; mlp: 2-hidden-layer MLP (--width scales each; "
                        "--norm applies to wrn and cnn)")
    g.add_argument("--norm", default="batch", choices=list(NORMS))
    g.add_argument("--width", type=positive_int, default=10, help="WRN width (cnn: base filters / 16)")
    g.add_argument("--depth", type=positive_int, default=28, help="WRN depth (6n+4)")
    g.add_argument("--dropout_rate", type=probability, default=0.0)
    g.add_argument("--uncond", action="store_true", help="separate scalar energy head (else E = -logsumexp logits)")
    g.add_argument("--spectral_norm", action="store_true", help="spectral normalisation of every conv and linear layer")

    g = p.add_argument_group("SGLD and replay buffer")
    g.add_argument("--n_steps", type=positive_int, default=10, help="sampler steps per iteration (K)")
    g.add_argument("--sampler", default="sgld", choices=list(SAMPLERS),
                   help="sgld: upstream (clamped gradient); tutorial: noise then gradient clamped to +-0.03; "
                        "langevin: x + lr grad f + std N; langevin_exact: eps=--sgld_lr, x + eps^2/2 grad f + eps N; "
                        "gd_momentum / adam: noise-free descent on E; mala / hmc: Metropolis-adjusted "
                        "(step --sgld_lr; acceptance logged)")
    g.add_argument("--sgld_lr", type=positive_float, default=1.0, help="sampler step size")
    g.add_argument("--sgld_std", type=nonneg_float, default=0.0, help="sampler noise std (sgld, tutorial, langevin)")
    g.add_argument("--n_leapfrog", type=positive_int, default=10, help="hmc: leapfrog steps per proposal")
    g.add_argument("--buffer_size", type=positive_int, default=10000)
    g.add_argument("--reinit_freq", type=probability, default=0.05, help="fraction of chains restarted each draw")
    g.add_argument("--init", default="gm", choices=["gm", "gm_class", "u", "n", "data"],
                   help="chain starts: gm fitted Gaussian, gm_class one Gaussian per class, u uniform, "
                        "n standard Gaussian, data training images plus --init_noise")
    g.add_argument("--init_noise", type=nonneg_float, default=0.1, help="--init data: std of the added noise")
    g.add_argument("--short_run", action="store_true",
                   help="no replay buffer: every iteration starts fresh chains from --init (short-run, non-persistent)")
    g.add_argument("--center_dir", default=".", help="where one_center.py wrote {dataset}_mean_one.pt / _cov_one.pt")
    g.add_argument("--class_cond_p_x_sample", action="store_true",
                   help="sample chains from p(x|y) with y uniform (class blocks in the buffer)")

    g = p.add_argument_group("run directory, logging, checkpoints")
    g.add_argument("--save_dir", default=None,
                   help="run directory, refused if it holds a run (default: a new ./experiment/<dataset>_<date>_<time>_<pid> "
                        "for each run, as upstream makes a new directory per run)")
    g.add_argument("--overwrite", action="store_true", help="write into an existing run directory")
    g.add_argument("--resume", default=None, help="RUN_DIR or 'auto' (= --save_dir): continue from its newest checkpoint")
    g.add_argument("--load_path", default=None, help="start from this checkpoint's model (and buffer)")
    g.add_argument("--ckpt_every", type=positive_int, default=10, help="epochs between ckpt_{epoch}.pt")
    g.add_argument("--ckpt_every_iters", type=nonneg_int, default=0,
                   help="also write last_ckpt.pt every N iterations (0: only at epoch ends)")
    g.add_argument("--keep_ckpts", type=positive_int, default=3,
                   help="rolling checkpoints ckpt_iter_N.pt kept (last_ckpt.pt links the newest)")
    g.add_argument("--eval_every", type=positive_int, default=1, help="epochs between validation/test evaluation")
    g.add_argument("--print_every", type=positive_int, default=100, help="iterations between logged metrics")
    g.add_argument("--plot_every", type=positive_int, default=100, help="iterations between sample grids")
    g.add_argument("--plot_uncond", action="store_true", help="save a grid of replay-buffer samples each epoch")
    g.add_argument("--plot_cond", action="store_true", help="save class-conditional sample grids each epoch")
    g.add_argument("--novis", action="store_true", help="save no sample grids")
    g.add_argument("--diverge_threshold", type=positive_float, default=1e5,
                   help="|loss| above this (or any NaN/inf in loss or samples) counts as divergence")
    g.add_argument("--rollback_lr_factor", type=positive_float, default=0.5,
                   help="on divergence, roll back to the last checkpoint and multiply the lr by this")
    g.add_argument("--max_rollbacks", type=nonneg_int, default=3, help="give up after this many rollbacks")
    g.add_argument("--long_run_every", type=nonneg_int, default=0,
                   help="every N iterations, run --long_run_n chains from uniform noise for --long_run_steps steps "
                        "(eval mode, fixed seed, training unaffected) to see the model's steady state; 0: off")
    g.add_argument("--long_run_steps", type=positive_int, default=10000, help="sampler steps of the long-run chains")
    g.add_argument("--long_run_n", type=positive_int, default=64, help="number of long-run chains")
    g.add_argument("--thermo", action="store_true",
                   help="record work, heat, free energy and information per iteration (thermo.csv; two extra "
                        "no-grad forwards per iteration); plot with eval_maebm.py --eval thermo")
    g.add_argument("--seed", type=int, default=1)

    g = p.add_argument_group("speed")
    g.add_argument("--amp", default="off", choices=["auto", "on", "off"],
                   help="bf16 autocast for forward passes and SGLD (off: fp32 as published; auto: on with CUDA; "
                        "not yet shown on a GPU to keep the published accuracy and FID)")
    g.add_argument("--channels_last", default="off", choices=["auto", "on", "off"],
                   help="channels_last memory format (auto: on with CUDA)")
    g.add_argument("--compile", action="store_true", help="torch.compile the energy model")
    g.add_argument("--sync_bn", action="store_true",
                   help="under torchrun, SyncBatchNorm across processes (CUDA); otherwise each keeps its own statistics")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    g.add_argument("--gpu-id", default="0", help="CUDA device index")
    g.add_argument("--exp_name", default="MAEBM", help="free text stored with the run")
    g.add_argument("--note", default="", help="free text stored with the run")
    for name in ("--no_fid", "--no_wandb", "--print_to_log", "--debug"):
        g.add_argument(name, action="store_true", help=NOOP + ("; use eval_maebm.py --eval fid" if name == "--no_fid" else ""))
    for name, default in (("--dir_path", "./experiment"), ("--log_dir", "./runs"), ("--log_arg", "")):
        g.add_argument(name, default=default, help=NOOP + "; the run directory is --save_dir")
    return p


def check_args(args, n_classes):
    if args.objective == "dcl" and args.pyx == 0:
        raise UserError("--objective dcl trains only the cross-entropy, but --pyx is 0")
    if args.px == 0 and args.pyx == 0:
        raise UserError("--px and --pyx are both 0: nothing to train")
    if args.objective in CONDITIONAL_OBJECTIVES and args.uncond:
        raise UserError(f"--objective {args.objective} needs class logits as energies; it cannot be used with --uncond")
    if args.model == "wrn" and (args.depth - 4) % 6:
        raise UserError(f"--depth: Wide-ResNet depth must be 6n+4 (10, 16, 22, 28, ...), got {args.depth}")
    if args.class_cond_p_x_sample and args.uncond:
        raise UserError("--class_cond_p_x_sample needs class logits as energies; it cannot be used with --uncond")
    if args.px > 0 and class_blocked(args) and args.buffer_size % n_classes:
        raise UserError(f"--buffer_size: {args.buffer_size} is not divisible by the {n_classes} classes "
                        f"(needed by {'--class_cond_p_x_sample' if args.class_cond_p_x_sample else '--objective ' + args.objective})")


def class_blocked(args):
    """Whether chains are drawn given a class, so the buffer is split into class blocks."""
    return args.class_cond_p_x_sample or args.objective in CONDITIONAL_OBJECTIVES


def wants_cuda(args):
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    return args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())


def select_device(args, dist_info):
    """CPU, --gpu-id's device, or under torchrun the rank's LOCAL_RANK device."""
    if not wants_cuda(args):
        return torch.device("cpu")
    if dist_info.enabled:
        return torch.device(f"cuda:{dist_info.local_rank}")
    return torch.device(f"cuda:{int(args.gpu_id.split(',')[0])}")


def fast_path_settings(args, device):
    """(bf16 autocast, channels_last): 'auto' turns each on for CUDA only."""
    on = lambda v: v == "on" or (v == "auto" and device.type == "cuda")
    return on(args.amp), on(args.channels_last)


def architecture(args, in_channels, image_size, n_classes):
    return {**{k: getattr(args, k) for k in ARCH_KEYS}, "in_channels": in_channels,
            "image_size": image_size, "n_classes": n_classes}


def check_same_architecture(ckpt, arch, path):
    theirs = ckpt.get("arch", {})
    diff = [f"{k}={theirs.get(k)!r} in the checkpoint vs {v!r} in the flags" for k, v in arch.items() if theirs.get(k) != v]
    if diff:
        raise UserError(f"checkpoint {path} does not match the flags: " + "; ".join(diff))


class StopRequest:
    """Records SIGTERM/SIGINT so the loop can finish its iteration, checkpoint and exit."""

    def __init__(self):
        self.signum = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.signum = signum


def load_data(args, device, dist_info):
    """Train (un-augmented for p(x), augmented for p(y|x)), validation and test loaders; a dataset without labels
    (CelebA) has p(x) batches only."""
    unlabelled = args.dataset in UNLABELLED
    if unlabelled and (args.pyx > 0 or args.objective != "maebm" or args.n_valid):
        raise UserError(f"--dataset {args.dataset} has no labels: train it on p(x) alone (--pyx 0, --objective maebm, "
                        "--n_valid 0), as upstream's train_maebm_celeba.py does")
    train_plain = load_dataset(args.dataset, args.data_root, True, image_transform(args.dataset, False), args.download)
    train_aug = None if unlabelled else \
        load_dataset(args.dataset, args.data_root, True, image_transform(args.dataset, True), args.download)
    test_set = None if unlabelled else \
        load_dataset(args.dataset, args.data_root, False, image_transform(args.dataset, False), args.download)
    labels = dataset_labels(train_plain)
    n_classes = DATASETS[args.dataset][2] or int(labels.max()) + 1
    if args.n_valid:
        train_idx, valid_idx = split_train_valid(len(train_plain), args.n_valid, args.seed)
    else:
        train_idx, valid_idx = torch.arange(len(train_plain)), torch.arange(0)
    labelled_idx = labelled_subset(train_idx, labels, args.labels_per_class, args.seed)
    workers = args.workers if args.workers >= 0 else (4 if device.type == "cuda" else 0)
    eval_loader = lambda ds: make_loader(ds, 256, args.seed, workers, shuffle=False, drop_last=False)
    return SimpleNamespace(
        n_classes=n_classes, n_train=len(train_idx), n_valid=len(valid_idx), n_test=len(test_set or ()),
        px=make_loader(Subset(train_plain, train_idx.tolist()), args.batch_size, args.seed, workers,
                       rank=dist_info.rank, world=dist_info.world),
        labelled=None if unlabelled else make_loader(Subset(train_aug, labelled_idx.tolist()), args.pyx_batch_size,
                                                     args.seed + 1, workers, rank=dist_info.rank, world=dist_info.world),
        valid=eval_loader(Subset(train_plain, valid_idx.tolist())) if args.n_valid else None,
        test=None if unlabelled else eval_loader(test_set))


def make_optimizer(args, model):
    params = model.class_output.parameters() if args.clf_only else model.parameters()
    if args.optimizer == "adam":
        return torch.optim.Adam(params, lr=args.lr, betas=(args.adam_beta1, 0.999), weight_decay=args.weight_decay)
    return torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=args.weight_decay)


def main(argv=None, parser=None):
    args = (parser or build_parser()).parse_args(argv)
    if args.resume == "auto":
        if args.save_dir is None:
            raise UserError("--resume auto continues the run in --save_dir; name that directory")
        args.resume = args.save_dir
    if args.resume is None and args.save_dir is None:
        args.save_dir = os.path.join("experiment", f"{args.dataset}_{time.strftime('%Y%m%d_%H%M%S')}_{os.getpid()}")
    # stored in the checkpoint: evaluation from another directory must find the same data and Gaussian
    args.data_root, args.center_dir = os.path.abspath(args.data_root), os.path.abspath(args.center_dir)
    if args.resume is not None:
        args.save_dir = args.resume
    in_channels, image_size, _ = dataset_info(args.dataset)
    image_shape = (in_channels, image_size, image_size)
    dist_info = init_distributed(wants_cuda(args))
    try:
        return train(args, in_channels, image_size, image_shape, dist_info)
    finally:
        shutdown(dist_info)


def train(args, in_channels, image_size, image_shape, dist_info):
    device = select_device(args, dist_info)
    torch.manual_seed(args.seed)
    data = load_data(args, device, dist_info)
    n_classes = data.n_classes
    check_args(args, n_classes)
    generative = args.px > 0 and args.objective != "dcl"  # the objective has a p(x) or p(x, y) term
    # --thermo on a classifier-only run (dcl) still needs the model's own samples: chains are drawn for
    # measurement only and never enter the loss.
    sampling = generative or args.thermo
    classifying = args.pyx > 0 or args.objective == "dcl"
    if sampling and args.buffer_size % dist_info.world:
        raise UserError(f"--buffer_size: {args.buffer_size} is not divisible by the {dist_info.world} processes")
    shard = args.buffer_size // dist_info.world  # each rank keeps its own part of the replay buffer
    start_fn = make_start_fn(args, image_shape, device, lambda: data.px.dataset)
    arch = architecture(args, in_channels, image_size, n_classes)
    # Read any checkpoint before touching the run directory, so a bad one changes nothing.
    if args.resume is not None:
        if not os.path.isdir(args.save_dir):
            raise UserError(f"--resume: {args.save_dir} is not a run directory")
        try:
            ckpt, ckpt_path, skipped = CheckpointDir(args.save_dir).newest_loadable()
        except UserError as e:
            raise UserError(f"--resume: {e}") from None
    elif args.load_path:
        ckpt, ckpt_path, skipped = load_checkpoint(args.load_path, allow_upstream=True), args.load_path, []
        if ckpt.get("upstream"):
            ckpt = adopt_upstream_checkpoint(ckpt, arch, ckpt_path)
    else:
        ckpt = ckpt_path = None
    if ckpt is not None:
        check_same_architecture(ckpt, arch, ckpt_path)
    run_dir = {}  # rank 0's lock is held for the whole run
    on_main(lambda: run_dir.update(zip(("lock", "archive"), prepare_run_dir(args.save_dir, args.overwrite,
                                                                            args.resume is not None))), dist_info)
    logger = RunLogger(args.save_dir, enabled=dist_info.is_main)
    if run_dir.get("archive"):
        logger.log(f"--overwrite: the previous run's files were moved to {run_dir['archive']}")
    on_main(lambda: logger.record_command(args), dist_info)

    model = build_model(args.model, n_classes, in_channels, args.depth, args.width, args.norm, args.dropout_rate,
                        args.uncond, image_size, args.spectral_norm).to(device)
    if args.sync_bn and dist_info.enabled:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optim = make_optimizer(args, model)
    if dist_info.enabled:
        torch.manual_seed(args.seed + dist_info.rank)  # same initial weights, different chains per rank
    buffer = None
    if sampling and not args.short_run:
        blocked = class_blocked(args)
        block_y = torch.arange(n_classes, device=device).repeat_interleave(shard // n_classes) if blocked else None
        if blocked and shard % n_classes:
            raise UserError(f"--buffer_size: each process's {shard} chains are not divisible by the {n_classes} classes")
        buffer = ReplayBuffer(start_fn(shard, block_y), n_classes if blocked else None)
    use_amp, channels_last = fast_path_settings(args, device)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_amp else contextlib.nullcontext
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    to_memory_format = lambda x: x if x is None else x.contiguous(memory_format=memory_format)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if args.compile:
        model.compile()
    if args.resume is None and any(isinstance(m, ActNorm) for m in model.modules()):
        with torch.no_grad():  # ActNorm initialises from its first batch: make that real data
            first = torch.stack([data.px.dataset[i][0] for i in range(min(64, len(data.px.dataset)))])
            model(to_memory_format(first.to(device)))
    # Upstream's epoch is one pass over the 128-image labelled loader whatever --pyx is (p(x) batches cycle
    # beside it); only its label-free CelebA script iterates the p(x) loader.
    iters_per_epoch = len(data.px if data.labelled is None else data.labelled)
    total_iters = args.n_epochs * iters_per_epoch
    if args.max_iters:
        total_iters = min(total_iters, args.max_iters)
    state = {"iteration": 0, "epoch": 0, "batch": 0, "best_valid_acc": -1.0, "lr_scale": 1.0, "rollbacks": 0,
             "rolled_back_to": None}
    px_stream, lab_stream = ResumableStream(data.px), ResumableStream(data.labelled)
    thermo = ThermoRecorder(args.batch_size, device) if args.thermo else None

    ckpts = CheckpointDir(args.save_dir, args.keep_ckpts)

    def checkpoint(name=None):
        """Write the full training state: a rolling checkpoint (and last_ckpt.pt), or the file `name`."""
        samples = gather_cat(buffer.samples, dist_info) if buffer is not None else None
        rngs = gather_objects(rng_state(), dist_info)

        def write():
            payload = {"model_state_dict": model.state_dict(), "optimizer_state_dict": optim.state_dict(),
                       "replay_buffer": samples, "rng": rngs, "arch": arch, "args_json": json.dumps(vars(args)),
                       **state, "px_stream": px_stream.position(), "lab_stream": lab_stream.position(),
                       "thermo": thermo.state_dict() if thermo is not None else None}
            if thermo is not None:
                atomic_write_text(os.path.join(args.save_dir, "thermo.csv"), thermo_csv(payload["thermo"]["history"]))
            if name is None:
                ckpts.save(payload, state["iteration"])
            else:
                atomic_torch_save(payload, os.path.join(args.save_dir, name))
        on_main(write, dist_info)

    def restore(ckpt):
        if len(ckpt["rng"]) != dist_info.world:
            raise UserError(f"checkpoint was written by {len(ckpt['rng'])} process(es); resume it with as many")
        model.load_state_dict(ckpt["model_state_dict"])
        optim.load_state_dict(ckpt["optimizer_state_dict"])
        if buffer is not None:
            buffer.samples = ckpt["replay_buffer"][dist_info.rank * shard:(dist_info.rank + 1) * shard].to(device)
        for k in state:
            state[k] = ckpt[k]
        px_stream.seek(**ckpt["px_stream"])
        lab_stream.seek(**ckpt["lab_stream"])
        set_rng_state(ckpt["rng"][dist_info.rank])
        if thermo is not None and ckpt.get("thermo") is not None:
            thermo.load_state_dict(ckpt["thermo"])
        # metrics.jsonl then holds one trajectory with increasing iterations, as the plots expect; the rows of
        # an abandoned (diverged) stretch stay in log.txt
        logger.truncate_metrics(state["iteration"])

    if args.resume is not None:
        restore(ckpt)
        for err in skipped:
            logger.log(f"skipped unreadable checkpoint: {err}")
        logger.log(f"resumed from {ckpt_path} at iteration {state['iteration']} (epoch {state['epoch']})")
    else:
        if ckpt is not None:
            load_weights(model, ckpt["model_state_dict"], ckpt_path)
            saved = ckpt.get("replay_buffer")
            if buffer is not None and saved is not None and len(saved) == args.buffer_size:
                buffer.samples = saved[dist_info.rank * shard:(dist_info.rank + 1) * shard].to(device)
            logger.log(f"loaded weights from {ckpt_path}")
        checkpoint()  # a known-good state that a divergence can roll back to

    stop = StopRequest()
    n_params = sum(p.numel() for p in model.parameters())
    logger.log(f"{args.dataset}: {data.n_train} train / {data.n_valid} valid / {data.n_test} test images; "
               f"model {args.model} ({n_params / 1e6:.2f}M params) on {device}; {iters_per_epoch} iterations/epoch")
    model.train()
    step = JointLoss(model, args.px, args.pyx, args.l2_coeff, args.objective, args.gamma, args.reg)
    if dist_info.enabled:
        # Heads that this objective never uses get no gradient; DDP must be told to expect that.
        unused = (args.uncond and not (generative and classifying)) or args.clf_only
        step = DistributedDataParallel(step, device_ids=[device.index] if device.type == "cuda" else None,
                                       find_unused_parameters=unused)
    logger.log(f"fast path: bf16 autocast {'on' if use_amp else 'off'}, channels_last {'on' if channels_last else 'off'}, "
               f"torch.compile {'on' if args.compile else 'off'}")
    bad = torch.zeros((), dtype=torch.bool, device=device)
    # The bar is closed before an error propagates, so the error stays the last line on stderr.
    with tqdm(total=total_iters, initial=state["iteration"], dynamic_ncols=True, desc="train") as bar:
        while state["iteration"] < total_iters:
            it, epoch = state["iteration"], state["epoch"]
            lr = state["lr_scale"] * lr_at(args.lr, it, epoch, args.warmup_iters, args.decay_epochs, args.decay_rate,
                                           args.decay_every)
            for group in optim.param_groups:
                group["lr"] = lr

            x_p = x_q = x_l = y_l = y_p = y_q = None
            with autocast():
                if generative:
                    x_p, y_p = (t.to(device, non_blocking=True) for t in px_stream.next())
                    if args.sigma > 0:
                        x_p = x_p + args.sigma * torch.randn_like(x_p)
                if sampling:
                    if args.objective in CONDITIONAL_OBJECTIVES:
                        y_q = y_p
                    elif args.class_cond_p_x_sample:
                        y_q = torch.randint(0, n_classes, (args.batch_size,), device=device)
                    else:
                        y_q = None
                    if buffer is None:  # --short_run: fresh chains every iteration
                        x0 = start_fn(args.batch_size, y_q)
                    else:
                        x0, idx = buffer.draw(args.batch_size, start_fn, args.reinit_freq, y_q)
                    if not generative:  # measurement chains leave the BatchNorm statistics of training alone
                        model.eval()
                    # per-chain energy and gradient norm, kept on the device, only on iterations that report
                    want_trace = it % args.print_every == 0 or (not args.novis and it % args.plot_every == 0)
                    trace = [] if want_trace else None
                    x_q, sampler_info = run_sampler(args.sampler, model, to_memory_format(x0), args.n_steps,
                                                    args.sgld_lr, args.sgld_std, y=y_q, n_leapfrog=args.n_leapfrog,
                                                    trace=trace)
                    model.train()
                    if buffer is not None:
                        buffer.update(idx, x_q)
                    bad |= ~torch.isfinite(x_q).all()
                if classifying:
                    x_l, y_l = lab_stream.next()
                    x_l, y_l = x_l.to(device, non_blocking=True), y_l.to(device, non_blocking=True)
                loss, logs = step(to_memory_format(x_p), x_q, to_memory_format(x_l), y_l, y_data=y_p, y_samples=y_q)
                logs.update({f"sampler/{k}": v for k, v in sampler_info.items()} if sampling else {})
            bad |= ~torch.isfinite(loss) | (loss.detach().abs() > args.diverge_threshold)

            if thermo is not None:
                E0, y_thermo = thermo_energies(model, x_q, y_q)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            if args.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
            optim.step()
            if thermo is not None:
                thermo.record(it, E0, thermo_energies(model, x_q, y_thermo)[0])
            state["iteration"], state["batch"] = it + 1, state["batch"] + 1
            bar.update(1)
            epoch_end = state["batch"] == iters_per_epoch
            if epoch_end:
                state["epoch"], state["batch"] = epoch + 1, 0
            finished = state["iteration"] >= total_iters
            stopping = stop.signum is not None
            if dist_info.enabled:  # every rank must stop at the same iteration: one small all-reduce
                stopping = bool(any_rank(torch.tensor(stopping, device=device), dist_info))
            ckpt_due = epoch_end or finished or stopping or \
                (args.ckpt_every_iters and state["iteration"] % args.ckpt_every_iters == 0)

            # The health flag is read (one host sync) only when logging or before a checkpoint is written,
            # so a checkpoint never holds a diverged state.
            if it % args.print_every == 0 or ckpt_due:
                if bool(any_rank(bad, dist_info)):
                    if sampling and not args.novis and dist_info.is_main:
                        save_grid(x_q, os.path.join(args.save_dir, f"diverge_{epoch}_{it:08d}.png"))
                    if state["rollbacks"] >= args.max_rollbacks:
                        raise UserError(f"training diverged at iteration {it} after {state['rollbacks']} rollbacks "
                                        f"(see --max_rollbacks); samples saved as diverge_*.png in {args.save_dir}")
                    lr_scale, rollbacks = state["lr_scale"] * args.rollback_lr_factor, state["rollbacks"] + 1
                    # Diverging again before passing a newer checkpoint means that checkpoint may already be
                    # on its way out: go one further back.
                    last = state["rolled_back_to"]
                    again = last is not None and ckpts.rolling()[0][0] <= last
                    try:
                        ckpt, path, _ = ckpts.newest_loadable(before=last if again else None)
                    except UserError:
                        ckpt, path, _ = ckpts.newest_loadable()
                    restore(ckpt)
                    state["lr_scale"], state["rollbacks"], state["rolled_back_to"] = lr_scale, rollbacks, ckpt["iteration"]
                    torch.manual_seed(args.seed + 7919 * rollbacks + dist_info.rank)
                    bad.zero_()
                    bar.reset(total=total_iters)
                    bar.update(state["iteration"])
                    logger.log(f"divergence at iteration {it}: rolled back to {path} (iteration {state['iteration']}), "
                               f"lr scaled to x{lr_scale:g} (rollback {rollbacks}/{args.max_rollbacks})")
                    continue
            if it % args.print_every == 0:
                values = {k: float(v) for k, v in {"loss/total": loss.detach(), **logs}.items()}
                if generative:  # diagnostics of learning: energy gap and the samples' input-gradient size
                    values["diag/energy_gap"] = values["energy/f_data"] - values["energy/f_samples"]
                    values["diag/grad_norm"] = input_grad_norm(model, x_q, y_q)
                if sampling:
                    values.update(chain_summary(torch.stack(trace), "chain"))
                logger.metrics(it, epoch=epoch, lr=lr, **values)
                bar.set_postfix(ep=epoch, loss=f"{values['loss/total']:.4f}", acc=f"{values.get('train/acc', float('nan')):.3f}")
                logger.log(f"it {it} ep {epoch} lr {lr:.4g} " + " ".join(f"{k}={v:.4f}" for k, v in values.items()),
                           echo=False)
            if sampling and not args.novis and it % args.plot_every == 0 and dist_info.is_main:
                save_grid(x_q, os.path.join(args.save_dir, "samples", f"x_q_{epoch}_{it:08d}.png"))
                plot_chain_trace(torch.stack(trace), os.path.join(args.save_dir, "samples", f"chains_{epoch}_{it:08d}.png"),
                                 f"iteration {it}: the {args.n_steps} steps of this batch's chains")
            if sampling and args.long_run_every and state["iteration"] % args.long_run_every == 0 and dist_info.is_main:
                long_run(args, model, state["iteration"], epoch, image_shape, device, autocast, logger)
            if epoch_end and (epoch % args.eval_every == 0 or epoch == args.n_epochs - 1):
                evaluate_epoch(args, model, buffer, epoch, state, data, device, logger, start_fn, checkpoint, dist_info)
            if epoch_end and epoch % args.ckpt_every == 0:
                checkpoint(f"ckpt_{epoch}.pt")
            if ckpt_due:
                checkpoint()
            if stopping:
                logger.log(f"stopped by signal {stop.signum} at iteration {state['iteration']}; "
                           f"continue with --resume {args.save_dir}")
                logger.close()
                return 128 + (stop.signum or signal.SIGTERM)
    if dist_info.enabled:
        logger.log(f"{dist_info.world} processes agree on the parameters: max |difference from rank 0| = "
                   f"{max_parameter_difference(model, dist_info):.3g}")
    logger.log(f"finished at iteration {state['iteration']}; run directory {args.save_dir}")
    logger.close()
    return 0


def long_run(args, model, iteration, epoch, image_shape, device, autocast, logger):
    """Long-run chains from uniform noise: a grid of where they end, their energy traces, and the end values."""
    x, trace = long_run_chains(model, lambda n: uniform_start(n, image_shape, device), args.long_run_n,
                               args.long_run_steps, args.sampler, args.sgld_lr, args.sgld_std, args.n_leapfrog,
                               args.seed, device, autocast)
    values = chain_summary(trace, "long_run")
    logger.metrics(iteration, epoch=epoch, **values)
    logger.log(f"long-run chains ({args.long_run_steps} steps) after iteration {iteration}: "
               + " ".join(f"{k}={v:.4f}" for k, v in values.items()), echo=False)
    if not args.novis:
        out = os.path.join(args.save_dir, "long_run")
        os.makedirs(out, exist_ok=True)
        save_grid(x, os.path.join(out, f"long_run_{iteration:08d}.png"))
        plot_chain_trace(trace, os.path.join(out, f"long_run_{iteration:08d}_chains.png"),
                         f"{args.long_run_n} chains from uniform noise, {args.long_run_steps} steps, after iteration {iteration}")


def evaluate_epoch(args, model, buffer, epoch, state, data, device, logger, start_fn, checkpoint, dist_info):
    """Validation/test metrics, best_valid_ckpt.pt, and the epoch's sample grids (rank 0's numbers decide)."""
    results = {}
    if data.valid is not None:
        results["valid/loss"], results["valid/acc"], results["valid/f"] = evaluate_classifier(model, data.valid, device)
    if data.test is not None:
        results["test/loss"], results["test/acc"], results["test/f"] = evaluate_classifier(model, data.test, device)
    results = broadcast_object(results, dist_info)
    if results:
        logger.metrics(state["iteration"], epoch=epoch, **results)
        logger.log(f"epoch {epoch}: " + " ".join(f"{k}={v:.4f}" for k, v in results.items()))
    if data.valid is not None and (args.pyx > 0 or args.objective == "dcl") and \
            results["valid/acc"] > state["best_valid_acc"]:
        state["best_valid_acc"] = results["valid/acc"]
        checkpoint("best_valid_ckpt.pt")
    if args.novis or buffer is None or not dist_info.is_main:
        return
    if args.plot_uncond:
        save_grid(buffer.samples[:100], os.path.join(args.save_dir, "samples", f"buffer_{epoch}.png"))
    if args.plot_cond and not args.uncond:
        # eval mode so that drawing these grids leaves the BatchNorm statistics of training untouched
        model.eval()
        y = torch.arange(data.n_classes, device=device).repeat_interleave(10)
        x, _ = run_sampler(args.sampler, model, start_fn(len(y), y), args.n_steps * 10, args.sgld_lr, args.sgld_std,
                           y=y, n_leapfrog=args.n_leapfrog)
        model.train()
        save_grid(x, os.path.join(args.save_dir, "samples", f"cond_{epoch}.png"), nrow=10)


if __name__ == "__main__":
    sys.exit(run_cli(main))
