"""Everything train() builds before its loop: device, data, model, optimizer, buffer, starting
checkpoint and run directory (build_training). Each function is one decision, shared with the benchmarks."""
import os
import shutil
from types import SimpleNamespace

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Subset

from models import build_model, recorded_arch
from models.energy import compile_backbone
from models.norms import ActNorm
from utils.checkpoint import CheckpointDir, load_checkpoint
from utils.device import select_device, use_cudnn_autotuner
from utils.data import (DATASETS, UNLABELLED, augmentation, dataset_labels, image_transform, images_as_uint8,
                        labelled_subset, load_dataset, make_loader, split_train_valid)
from utils.distributed import on_main
from utils.errors import UserError
from utils.fid import FidScorer
from utils.precision import compile_wanted, cpu_has_amx, precision_policy
from utils.run_dir import RunLogger, prepare_run_dir
from utils.sampling.buffer import ReplayBuffer
from utils.sampling.starts import make_start_fn, start_density
from utils.thermo import ThermoRecorder
from utils.training.chain_free import CHAIN_FREE_OBJECTIVES, ChainFreeLoss, start_log_z
from utils.training.energy_matching import EnergyMatchingLoss
from utils.training.ema import WeightAverage
from utils.training.objectives import JointLoss
from utils.training.plan import make_plan
from utils.training.sam import SharpnessAware, sada_jem_adaptive
from utils.training.streams import DeviceStream, ResumableStream
from utils.training.state import TrainState
from utils.upstream import adopt_upstream_checkpoint
from utils.wandb_mirror import WandbMirror

ARCH_KEYS = ("dataset", "model", "depth", "width", "norm", "act", "uncond", "spectral_norm")


def load_data(args, device, dist_info):
    """Train streams (un-augmented for p(x), augmented for p(y|x); a dataset without labels, CelebA, has p(x) batches
    only), validation and test loaders. In-memory datasets live on `device` as uint8 and are batched there."""
    unlabelled = args.dataset in UNLABELLED
    if unlabelled and (args.pyx > 0 or args.objective != "maebm" or args.n_valid):
        raise UserError(f"--dataset {args.dataset} has no labels: train it on p(x) alone (--pyx 0, --objective maebm, "
                        "--n_valid 0), as upstream's train_maebm_celeba.py does")
    load = lambda train, augment: load_dataset(args.dataset, args.data_root, train,
                                               image_transform(args.dataset, augment), args.download)
    if dist_info.enabled:  # rank 0 fetches a missing dataset alone; the others then read its files
        on_main(lambda: (load(True, False), unlabelled or load(False, False)), dist_info)
    train_plain = load(True, False)
    test_set = None if unlabelled else load(False, False)
    labels = dataset_labels(train_plain)
    n_classes = DATASETS[args.dataset][2] or int(labels.max()) + 1
    if args.n_valid:
        train_idx, valid_idx = split_train_valid(len(train_plain), args.n_valid, args.seed)
    else:
        train_idx, valid_idx = torch.arange(len(train_plain)), torch.arange(0)
    labelled_idx = labelled_subset(train_idx, labels, args.labels_per_class, args.seed)
    workers = args.workers if args.workers >= 0 else (4 if device.type == "cuda" else 0)
    eval_loader = lambda ds: make_loader(ds, 256, args.seed, workers, shuffle=False, drop_last=False)
    shard = dict(rank=dist_info.rank, world=dist_info.world)
    in_memory = images_as_uint8(train_plain)
    if in_memory is not None:
        images, all_labels = (t.to(device) for t in in_memory)
        pad, flip = augmentation(args.dataset)
        stream = lambda idx, bs, seed, augment: DeviceStream(
            images, all_labels, idx, bs, seed, Subset(train_plain, idx.tolist()), *((pad, flip) if augment else ()),
            **shard)
    else:
        train_aug = None if unlabelled else load(True, True)
        stream = lambda idx, bs, seed, augment: ResumableStream(make_loader(
            Subset(train_aug if augment else train_plain, idx.tolist()), bs, seed, workers, **shard))
    return SimpleNamespace(
        n_classes=n_classes, n_train=len(train_idx), n_valid=len(valid_idx), n_test=len(test_set or ()),
        px=stream(train_idx, args.batch_size, args.seed, False),
        labelled=ResumableStream(None) if unlabelled else stream(labelled_idx, args.pyx_batch_size, args.seed + 1, True),
        valid=eval_loader(Subset(train_plain, valid_idx.tolist())) if args.n_valid else None,
        test=None if unlabelled else eval_loader(test_set))


def architecture(args, in_channels, image_size, n_classes):
    """What a checkpoint must match to be loaded into this run's model."""
    return {**{k: getattr(args, k) for k in ARCH_KEYS}, "in_channels": in_channels,
            "image_size": image_size, "n_classes": n_classes}


def read_start_checkpoint(args, arch):
    """(checkpoint, path, unreadable newer ones) of --resume or --load_path, or (None, None, []); read before the
    run directory is touched, so a bad checkpoint changes nothing."""
    if args.resume is not None:
        if not os.path.isdir(args.save_dir):
            raise UserError(f"--resume: {args.save_dir} is not a run directory")
        try:
            ckpt, path, skipped = CheckpointDir(args.save_dir).newest_loadable()
        except UserError as e:
            raise UserError(f"--resume: {e}") from None
    elif args.load_path:
        ckpt, path, skipped = load_checkpoint(args.load_path, allow_upstream=True), args.load_path, []
        if ckpt.get("upstream"):
            ckpt = adopt_upstream_checkpoint(ckpt, arch, path)
    else:
        return None, None, []
    theirs = recorded_arch(ckpt.get("arch", {}))
    diff = [f"{k}={theirs.get(k)!r} in the checkpoint vs {v!r} in the flags" for k, v in arch.items() if theirs.get(k) != v]
    if diff:
        raise UserError(f"checkpoint {path} does not match the flags: " + "; ".join(diff))
    return ckpt, path, skipped


def open_run_dir(args, dist_info, on_main):
    """(lock held for the run's life, logger): the directory prepared on rank 0, the command recorded."""
    run_dir = {}
    on_main(lambda: run_dir.update(zip(("lock", "archive"), prepare_run_dir(args.save_dir, args.overwrite,
                                                                            args.resume is not None))), dist_info)
    logger = RunLogger(args.save_dir, enabled=dist_info.is_main)
    if run_dir.get("archive"):
        logger.log(f"--overwrite: the previous run's files were moved to {run_dir['archive']}")
    on_main(lambda: logger.record_command(args), dist_info)
    if args.wandb is not None and dist_info.is_main:
        logger.mirror = WandbMirror(args.wandb, args.save_dir, vars(args))
    return run_dir.get("lock"), logger


def make_model_and_optimizer(args, arch, device, dist_info):
    model = build_model(args.model, arch["n_classes"], arch["in_channels"], args.depth, args.width, args.norm,
                        args.dropout_rate, args.uncond, arch["image_size"], args.spectral_norm,
                        log_normaliser=args.objective == "nce", act=args.act).to(device)
    if args.sync_bn and dist_info.enabled:
        model = sync_batchnorm(model, device)
    params = model.class_output.parameters() if args.clf_only else model.parameters()
    if args.optimizer == "adam":
        optim = torch.optim.Adam(params, lr=args.lr, betas=(args.adam_beta1, 0.999), weight_decay=args.weight_decay)
    else:
        optim = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=args.weight_decay)
    if args.optimizer == "sam":
        adaptive = args.sam_adaptive == "on" or (args.sam_adaptive == "auto" and sada_jem_adaptive(args.rho))
        optim = SharpnessAware(optim, args.rho, adaptive)
    return model, optim


def sync_batchnorm(model, device):
    """--sync_bn under torchrun: the model's BatchNorm layers as SyncBatchNorm, which torch runs on CUDA only."""
    if device.type != "cuda":
        raise UserError("--sync_bn: SyncBatchNorm runs on CUDA devices only; on the CPU drop it (each process then "
                        "keeps its own BatchNorm statistics)")
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


def make_buffer(args, plan, start_fn, device, dist_info):
    """This rank's share of the replay buffer (class blocks when chains are drawn given a class), or None for
    --short_run and runs that draw no chains."""
    if not plan.sampling or args.short_run:
        return None
    shard = args.buffer_size // dist_info.world
    if plan.class_blocked and shard % plan.n_classes:
        raise UserError(f"--buffer_size: each process's {shard} chains are not divisible by the {plan.n_classes} classes")
    block_y = torch.arange(plan.n_classes, device=device).repeat_interleave(shard // plan.n_classes) \
        if plan.class_blocked else None
    return ReplayBuffer(start_fn(shard, block_y), plan.n_classes if plan.class_blocked else None)


def make_fid_scorer(args, data, buffer, device, dist_info):
    """The --fid_every scorer on rank 0 (None when off or without a buffer): the training images as reference."""
    if not args.fid_every or buffer is None or not dist_info.is_main:
        return None
    cache_dir = args.fid_stats_dir or os.path.join(args.data_root, "fid_stats")
    return FidScorer(data.px.dataset, cache_dir, args.dataset, device, n_ref=args.fid_ref_n, seed=args.seed)


def prepare_model(model, precision, data, device, fresh):
    """The precision policy's layout; a fresh run's ActNorm layers initialised from real data."""
    if precision.channels_last:
        model.to(memory_format=torch.channels_last)
    if fresh and any(isinstance(m, ActNorm) for m in model.modules()):
        with torch.no_grad():  # ActNorm initialises from its first batch: make that real data
            first = torch.stack([data.px.dataset[i][0] for i in range(min(64, len(data.px.dataset)))])
            model(precision.layout(first.to(device)))


def make_loss(args, plan, model, device, dist_info, noise, start_fn):
    """The differentiable part of an iteration (`noise`: NCE's; `start_fn`: Energy Matching's path and negative
    starts), wrapped in DistributedDataParallel under torchrun."""
    if args.objective == "energy_matching":
        loss = EnergyMatchingLoss(model, args.px, args.pyx, start_fn, (args.sampler, args.n_steps, args.sgld_lr,
                                                                       args.sgld_std),
                                  args.time_cutoff, args.cd_start_iter, args.lambda_cd, args.cd_trim_fraction,
                                  args.cd_neg_clamp).to(device)
    elif args.objective in CHAIN_FREE_OBJECTIVES:
        loss = ChainFreeLoss(model, args.objective, args.px, args.pyx, args.dsm_sigmas or [args.dsm_sigma],
                             args.ssm_projections, args.ssm_dist, noise, args.nce_ratio,
                             per_pixel=args.sm_scale == "pixel").to(device)
    else:
        loss = JointLoss(model, args.px, args.pyx, args.l2_coeff, args.objective, args.gamma, args.reg)
    if not dist_info.enabled:
        return loss
    # Heads that this objective never uses get no gradient; DDP must be told to expect that.
    unused = (args.uncond and not (plan.generative and plan.classifying)) or args.clf_only
    return DistributedDataParallel(loss, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=unused)


def require_cpp_compiler():
    """inductor builds its CPU kernels with a C++ compiler: refuse --compile before the run starts if there is none."""
    names = [os.environ.get("CXX"), "g++", "clang++", "c++"]
    if not any(name and shutil.which(name) for name in names):
        raise UserError("--compile on the CPU: torch.compile's inductor needs a C++ compiler and none was found "
                        "(g++, clang++ or $CXX); install one (e.g. apt-get install g++) or train without --compile")


def start_state(state, ckpt, ckpt_path, skipped, logger):
    """--resume: continue exactly where the checkpoint stopped; otherwise --load_path's weights (if any) and a first
    checkpoint, the known-good state that a divergence can roll back to."""
    if state.args.resume is not None:
        state.restore(ckpt, logger)
        for err in skipped:
            logger.log(f"skipped unreadable checkpoint: {err}")
        logger.log(f"resumed from {ckpt_path} at iteration {state.iteration} (epoch {state.epoch})")
        return
    if ckpt is not None:
        state.start_from(ckpt, ckpt_path, logger)
    state.save()


def build_training(args, in_channels, image_size, image_shape, dist_info):
    """(the parts every iteration uses, the TrainState at its start, the logger, the run directory's lock, which the
    caller holds while it trains)."""
    device = select_device(args.device, args.gpu_id, dist_info.local_rank if dist_info.enabled else None)
    precision = precision_policy(args.amp, args.amp_sampler, args.channels_last, device)
    args.precision = precision.record()  # in args.json and checkpoints: evaluation samples as training did
    args.cudnn_benchmark = use_cudnn_autotuner(device)
    args.compiled = compile_wanted(args.compile, device)
    if args.compiled and device.type == "cpu":
        require_cpp_compiler()
    torch.manual_seed(args.seed)
    data = load_data(args, device, dist_info)
    plan = make_plan(args, data.n_classes, dist_info.world)
    start_fn = make_start_fn(args, image_shape, device, lambda: data.px.dataset)
    noise = start_density(args, image_shape, device) if args.objective == "nce" else None
    arch = architecture(args, in_channels, image_size, data.n_classes)
    ckpt, ckpt_path, skipped = read_start_checkpoint(args, arch)
    lock, logger = open_run_dir(args, dist_info, on_main)
    model, optim = make_model_and_optimizer(args, arch, device, dist_info)
    if dist_info.enabled:
        torch.manual_seed(args.seed + dist_info.rank)  # same initial weights, different chains per rank
    buffer = make_buffer(args, plan, start_fn, device, dist_info)
    prepare_model(model, precision, data, device, fresh=args.resume is None)
    if noise is not None and args.resume is None and ckpt is None:
        start_log_z(model, noise)
    ema = WeightAverage(model, args.ema) if args.ema > 0 else None
    if args.compiled:  # after the average is copied: a deep copy of a compiled module is not compiled
        for net in (model, ema.model) if ema is not None else (model,):
            compile_backbone(net)
    thermo = ThermoRecorder(args.batch_size, device) if args.thermo else None
    state = TrainState(args, arch, model, optim, buffer, data.px, data.labelled, thermo,
                       CheckpointDir(args.save_dir, args.keep_ckpts), dist_info, ema)
    start_state(state, ckpt, ckpt_path, skipped, logger)
    # Upstream's epoch is one pass over the 128-image labelled loader whatever --pyx is (p(x) batches cycle
    # beside it); only its label-free CelebA script iterates the p(x) loader.
    iters_per_epoch = len(data.labelled) or len(data.px)
    parts = SimpleNamespace(args=args, plan=plan, model=model, optim=optim, buffer=buffer, start_fn=start_fn,
                            px_stream=data.px, lab_stream=data.labelled, thermo=thermo, precision=precision,
                            ema=ema, device=device, data=data, dist=dist_info, image_shape=image_shape,
                            iters_per_epoch=iters_per_epoch,
                            total_iters=min(args.n_epochs * iters_per_epoch, args.max_iters or float("inf")),
                            loss=make_loss(args, plan, model, device, dist_info, noise, start_fn),
                            fid=make_fid_scorer(args, data, buffer, device, dist_info))
    n_params = sum(p.numel() for p in model.parameters())
    logger.log(f"{args.dataset}: {data.n_train} train / {data.n_valid} valid / {data.n_test} test images; "
               f"model {args.model} ({n_params / 1e6:.2f}M params) on {device}; {iters_per_epoch} iterations/epoch")
    logger.log(f"precision: {precision.describe()}, torch.compile {'on' if args.compiled else 'off'}"
               + (", cuDNN autotuner on" if args.cudnn_benchmark else "")
               + (" (CPU with AMX)" if device.type == "cpu" and cpu_has_amx() else ""))
    model.train()
    return parts, state, logger, lock
