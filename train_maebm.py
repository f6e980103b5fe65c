"""Train M-EBM (p(x)) and M-JEM (p(x) + p(y|x)) with SGLD chains started from a fitted Gaussian.

Published recipes (scripts/maebm_cifar10.sh, scripts/majem_cifar10.sh) run unchanged.
Example: python train_maebm.py --dataset fashionmnist --model cnn --width 1 --n_epochs 2 --save_dir experiment/fm
"""
import os
import sys
import time

from models import ACTIVATIONS, MODELS, NORMS, resolve_act
from utils.data import DATASETS, add_download_flag, dataset_info
from utils.device import wants_cuda
from utils.distributed import init_distributed, max_parameter_difference, shutdown
from utils.errors import (ArgumentParser, UserError, decay_rate, factor, fid_images, fid_images_or_zero,
                          int_or_minus_one, nonneg_float, nonneg_int, positive_float, positive_int, probability, run_cli)
from utils.progress import progress
from utils.sampling.samplers import ANNEAL_FACTOR, SAMPLERS
from utils.training import OBJECTIVES, lr_at
from utils.training.chain_free import CHAIN_FREE_OBJECTIVES
from utils.training.guard import DivergenceGuard
from utils.training.objectives import objective_name
from utils.training.reporting import final_numbers, finish_iteration
from utils.training.setup import build_training
from utils.training.stop import StopRequest
from utils.training.step import train_step
from utils.wandb_mirror import require_wandb

NOOP = "accepted for upstream compatibility; has no effect here"


def build_parser():
    p = ArgumentParser("train_maebm.py", description=__doc__.split("\n")[0],
                       example="python train_maebm.py --dataset fashionmnist --model cnn --width 1 --n_epochs 2 --center_dir ./data/centers")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="fashionmnist", choices=list(DATASETS), help="training data (fashionmnist installs offline)")
    g.add_argument("--data_root", default="./data", help="dataset root; Fashion-MNIST/MNIST are set up here offline")
    add_download_flag(g)
    g.add_argument("--n_valid", type=nonneg_int, default=0,
                   help="training images held out for validation and best_valid_ckpt.pt (0: none)")
    g.add_argument("--labels_per_class", type=int_or_minus_one, default=-1,
                   help="labelled images per class for p(y|x) (-1 or 0: all)")
    g.add_argument("--workers", type=int_or_minus_one, default=-1,
                   help="data-loader workers of folder datasets (CelebA, ...) and of evaluation (-1: 4 on CUDA, 0 on "
                        "CPU); in-memory datasets are batched and augmented on the training device")

    g = p.add_argument_group("optimisation")
    g.add_argument("--lr", type=positive_float, default=0.1, help="learning rate after warm-up, before decays")
    g.add_argument("--decay_epochs", nargs="+", type=nonneg_int, default=[60, 120, 180],
                   help="decay learning rate by decay_rate at these epochs")
    g.add_argument("--decay_rate", type=positive_float, default=0.2, help="learning rate decay multiplier")
    g.add_argument("--decay_every", type=nonneg_int, default=0,
                   help="decay every N epochs instead of at --decay_epochs (e.g. 1 with --decay_rate 0.97: StepLR)")
    g.add_argument("--adam_beta1", type=float, default=0.9, help="Adam's beta1 (the tutorial recipe uses 0)")
    g.add_argument("--clf_only", action="store_true", help="only train the classifier head")
    g.add_argument("--optimizer", choices=["adam", "sgd", "sam"], default="sgd",
                   help="sgd: momentum 0.9 (upstream); adam; sam: sharpness-aware minimisation around that SGD (SADA-JEM)")
    g.add_argument("--rho", type=nonneg_float, default=2.0,
                   help="--optimizer sam: neighbourhood radius (SADA-JEM's default 2; upstream M-EBM's no-op flag)")
    g.add_argument("--sam_adaptive", default="auto", choices=["auto", "on", "off"],
                   help="--optimizer sam: adaptive SAM (weights-scaled neighbourhood); auto: SADA-JEM's rule, on for "
                        "--rho >= 0.5")
    g.add_argument("--batch_size", type=positive_int, default=64, help="p(x) batch: data and SGLD chains")
    g.add_argument("--pyx_batch_size", type=positive_int, default=128,
                   help="labelled batch for p(y|x) (random crop + flip); an epoch is one pass over it, "
                        "also when --pyx is 0 (as upstream)")
    g.add_argument("--n_epochs", type=positive_int, default=200, help="epochs (passes over the labelled loader)")
    g.add_argument("--max_iters", type=nonneg_int, default=0, help="stop after this many iterations in all (0: no limit)")
    g.add_argument("--max_minutes", type=nonneg_float, default=0.0,
                   help="stop (checkpointed, as at the last iteration) once this invocation's loop has run this many "
                        "wall-clock minutes; the learning-rate schedule does not see it (0: no limit)")
    g.add_argument("--warmup_iters", type=int_or_minus_one, default=-1,
                   help="iterations of linear learning-rate warm-up (-1 or 0: none, upstream's default)")
    g.add_argument("--weight_decay", type=nonneg_float, default=5e-4, help="L2 weight decay of the optimizer")
    g.add_argument("--clip_grad", type=nonneg_float, default=0.0, help="clip the parameter-gradient norm to this (0: off)")
    g.add_argument("--ema", type=decay_rate, default=0.0,
                   help="decay of an exponential moving average of the weights and BatchNorm buffers, updated every "
                        "iteration, saved in checkpoints and used by eval_maebm.py (0: off; e.g. 0.999)")
    g.add_argument("--ema_chains", action="store_true",
                   help="with --ema, the training chains sample the averaged model (eval mode) instead of the online one")

    g = p.add_argument_group("loss")
    g.add_argument("--px", type=nonneg_float, default=1.0, help="weight of the p(x) (contrastive) loss")
    g.add_argument("--pyx", type=nonneg_float, default=1.0, help="weight of the p(y|x) cross-entropy")
    g.add_argument("--l2_coeff", type=nonneg_float, default=0.0,
                   help="energy regulariser l2 * (mean f(x+)^2 + (mean f(x-))^2)")
    g.add_argument("--objective", default="maebm", choices=[*OBJECTIVES, *CHAIN_FREE_OBJECTIVES], type=objective_name,
                   help="maebm/m_ebm: marginal contrastive divergence on E(x) = -logsumexp f(x) (or the --uncond "
                        "head) plus pyx x cross-entropy; j_ebm: joint CD on E(x,y) = -f(x)[y], chains drawn given the "
                        "data labels; gcl: j_ebm minus --gamma x marginal CD; dcl: cross-entropy only. Without chains: "
                        "dsm denoising score matching (--dsm_sigma), ssm sliced score matching (--ssm_projections), "
                        "nce noise-contrastive estimation against --init's exact density (--nce_ratio, log Z learned); "
                        "energy_matching (Balcerak et al. 2025) -grad E regresses OT-paired straight paths from "
                        "--init's starts to the data, then (--cd_start_iter) adds CD on --sampler flow's negatives; "
                        "their samples come from the sampler flags, e.g. --sampler annealed")
    g.add_argument("--gamma", type=float, default=1.0, help="gcl: weight of the marginal term that is unlearned")
    g.add_argument("--reg", default="asym", choices=["asym", "sym"],
                   help="energy regulariser with weight --l2_coeff: asym (upstream) l2 (mean f(x+)^2 + (mean f(x-))^2); "
                        "sym l2 (mean E(x+)^2 + mean E(x-)^2)")
    g.add_argument("--dsm_sigma", type=positive_float, default=0.1, help="dsm: the noise level")
    g.add_argument("--dsm_sigmas", type=positive_float, nargs="+", default=None,
                   help="dsm: several noise levels (replaces --dsm_sigma), one drawn per image, each term weighted "
                        "by sigma^2 (Song & Ermon 2019)")
    g.add_argument("--ssm_projections", type=positive_int, default=1, help="ssm: random projections per image")
    g.add_argument("--ssm_dist", default="rademacher", choices=["rademacher", "gaussian"],
                   help="ssm: distribution of the projection vectors")
    g.add_argument("--sm_scale", default="image", choices=["image", "pixel"],
                   help="dsm, ssm: their loss per image (the papers' sum over its values) or per pixel (divided by "
                        "the values per image, so it sits on the cross-entropy's scale)")
    g.add_argument("--nce_ratio", type=positive_int, default=1, help="nce: noise draws per data image")
    g.add_argument("--time_cutoff", type=probability, default=1.0,
                   help="energy_matching: path time from which the flow term fades linearly to 0 at t=1, and the flow "
                        "sampler's noise rises from 0 to --sgld_std (the paper's 1.0: all paths, noise from t=1 on)")
    g.add_argument("--cd_start_iter", type=nonneg_int, default=None,
                   help="energy_matching: the iteration from which the CD term joins the flow term (default: never; "
                        "the paper's second phase is its last 1.4%% of iterations)")
    g.add_argument("--lambda_cd", type=nonneg_float, default=1e-3, help="energy_matching: weight of the CD term")
    g.add_argument("--cd_trim_fraction", type=probability, default=0.1,
                   help="energy_matching: fraction of negatives of highest energy left out of the CD term")
    g.add_argument("--cd_neg_clamp", type=nonneg_float, default=0.02,
                   help="energy_matching: floor -cd_neg_clamp of the weighted CD term (0: none)")
    g.add_argument("--sigma", type=nonneg_float, default=0.0, help="std of Gaussian noise added to p(x) data")
    g.add_argument("--eps", type=float, default=1, help=NOOP)

    g = p.add_argument_group("network")
    g.add_argument("--model", default="wrn", choices=list(MODELS),
                   help="wrn: Wide-ResNet; cnn: small 4-conv CNN; tutorial_cnn: the tutorial's Swish CNN; "
                        "conv5: plain 5-conv LeakyReLU net; mlp: 2-hidden-layer MLP (--width scales each; "
                        "--norm applies to wrn and cnn)")
    g.add_argument("--norm", default="batch", choices=list(NORMS), help="normalisation layers of wrn and cnn")
    g.add_argument("--act", default="auto", choices=["auto", *ACTIVATIONS],
                   help="activation of every net (auto: the net's published one, LeakyReLU 0.2 except the tutorial "
                        "CNN's Swish = silu); recorded in checkpoints, rebuilt by eval_maebm.py")
    g.add_argument("--width", type=positive_int, default=10, help="WRN width (cnn: base filters / 16)")
    g.add_argument("--depth", type=positive_int, default=28, help="WRN depth (6n+4)")
    g.add_argument("--dropout_rate", type=probability, default=0.0, help="dropout inside the WRN blocks")
    g.add_argument("--uncond", action="store_true", help="separate scalar energy head (else E = -logsumexp logits)")
    g.add_argument("--spectral_norm", action="store_true", help="spectral normalisation of every conv and linear layer")

    g = p.add_argument_group("SGLD and replay buffer")
    g.add_argument("--n_steps", type=positive_int, default=10, help="sampler steps per iteration (K)")
    g.add_argument("--sampler", default="sgld", choices=list(SAMPLERS),
                   help="sgld: upstream (clamped gradient); jem: JEM's sample_q (model in eval mode, x + lr grad f + "
                        "std N, no clamp of gradient or x); tutorial: noise then gradient clamped to +-0.03; "
                        "langevin: x + lr grad f + std N; langevin_exact: eps=--sgld_lr, x + eps^2/2 grad f + eps N; "
                        "annealed: langevin with step and noise annealed over the chain (--anneal_factor); "
                        "flow: Energy Matching's x + lr grad f, noise-free before --time_cutoff, then + std N; "
                        "gd_momentum / adam: noise-free descent on E; mala / hmc: Metropolis-adjusted "
                        "(step --sgld_lr; acceptance logged)")
    g.add_argument("--sgld_lr", type=positive_float, default=1.0, help="sampler step size")
    g.add_argument("--sgld_std", type=nonneg_float, default=0.0,
                   help="sampler noise std (sgld, tutorial, langevin, annealed; flow: its Langevin tail)")
    g.add_argument("--anneal_factor", type=factor, default=ANNEAL_FACTOR,
                   help="annealed: the chain's first step is this many times --sgld_lr (noise sqrt as many times "
                        "--sgld_std), falling geometrically to 1x at its last")
    g.add_argument("--n_leapfrog", type=positive_int, default=10, help="hmc: leapfrog steps per proposal")
    g.add_argument("--buffer_size", type=positive_int, default=10000, help="replay buffer size (persistent chains)")
    g.add_argument("--reinit_freq", type=probability, default=0.05, help="fraction of chains restarted each draw")
    g.add_argument("--init", default="gm", choices=["gm", "gm_class", "u", "n", "data"],
                   help="chain starts: gm fitted Gaussian, gm_class one Gaussian per class, u uniform, "
                        "n standard Gaussian, data a seeded random --buffer_size of the training images "
                        "plus --init_noise")
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
    g.add_argument("--seed", type=int, default=1, help="seed of every RNG (data order, chains, weights)")

    g = p.add_argument_group("FID during training (pytorch-fid convention, offline weights where there is no network)")
    g.add_argument("--fid_every", type=nonneg_int, default=0,
                   help="every N epochs (and after the last), FID/KID of --fid_n replay-buffer images against "
                        "--fid_ref_n training images, logged as fid/* (0: off; eval_maebm.py --eval fid for more)")
    g.add_argument("--fid_n", type=fid_images, default=1000, help="buffer images scored (a seeded random draw)")
    g.add_argument("--fid_ref_n", type=fid_images_or_zero, default=2000, help="training images of the reference (0: all)")
    g.add_argument("--fid_stats_dir", default=None, help="reference statistics cache (default: <data_root>/fid_stats)")

    g = p.add_argument_group("speed")
    g.add_argument("--amp", default="off", choices=["auto", "on", "off"],
                   help="bf16 autocast for the loss's forwards and backward (off: fp32 as published; auto: on with "
                        "CUDA and on CPUs with AMX); heads and energies stay fp32")
    g.add_argument("--amp_sampler", default="off", choices=["on", "off"],
                   help="bf16 autocast for the chains' forward and input-gradient backward too (off: fp32 chains)")
    g.add_argument("--channels_last", default="off", choices=["auto", "on", "off"],
                   help="channels_last memory format (auto: on with CUDA and on CPUs with AMX)")
    g.add_argument("--compile", nargs="?", const="on", default="off", choices=["auto", "on", "off"],
                   help="torch.compile the feature extractor of the model (and of --ema's average): chains, loss "
                        "forwards and classify() (bare --compile: on; auto: on with CUDA; off: the default)")
    g.add_argument("--sync_bn", action="store_true",
                   help="under torchrun, SyncBatchNorm across processes (CUDA); otherwise each keeps its own statistics")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: CUDA when available")
    g.add_argument("--gpu-id", default="0", help="CUDA device index")
    g.add_argument("--exp_name", default="MAEBM", help="free text stored with the run")
    g.add_argument("--note", default="", help="free text stored with the run")
    g.add_argument("--wandb", default=None, metavar="PROJECT",
                   help="also log scalars, sample grids and flags to this Weights & Biases project (needs the wandb "
                        "package; WANDB_MODE=offline writes RUN/wandb/ for a later `wandb sync`)")
    g.add_argument("--no_wandb", action="store_true", help="upstream's switch: turns --wandb off")
    for name in ("--no_fid", "--print_to_log", "--debug"):
        g.add_argument(name, action="store_true", help=NOOP + ("; use eval_maebm.py --eval fid" if name == "--no_fid" else ""))
    for name, default in (("--dir_path", "./experiment"), ("--log_dir", "./runs"), ("--log_arg", "")):
        g.add_argument(name, default=default, help=NOOP + "; the run directory is --save_dir")
    return p


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
    if args.no_wandb:
        args.wandb = None
    require_wandb(args.wandb)
    args.act = resolve_act(args.model, args.act)  # the checkpoint records the activation the net was built with
    in_channels, image_size, _ = dataset_info(args.dataset)
    image_shape = (in_channels, image_size, image_size)
    dist_info = init_distributed(wants_cuda(args.device))
    try:
        return train(args, in_channels, image_size, image_shape, dist_info)
    finally:
        shutdown(dist_info)


def train(args, in_channels, image_size, image_shape, dist_info):
    parts, state, logger, _run_lock = build_training(args, in_channels, image_size, image_shape, dist_info)
    total_iters, device = parts.total_iters, parts.device
    stop = StopRequest(args.max_minutes)
    guard = DivergenceGuard(args, device, dist_info)
    # The bar is closed before an error propagates, so the error stays the last line on stderr.
    with progress(total=total_iters, initial=state.iteration, dynamic_ncols=True, desc="train") as bar:
        while state.iteration < total_iters:
            it, epoch = state.iteration, state.epoch
            lr = state.lr_scale * lr_at(args.lr, it, epoch, args.warmup_iters, args.decay_epochs, args.decay_rate,
                                        args.decay_every)
            want_trace = it % args.print_every == 0 or (not args.novis and it % args.plot_every == 0)
            result = train_step(parts, it, lr, want_trace, guard)
            bar.update(1)
            epoch_end = state.advance(parts.iters_per_epoch)
            scheduled_ckpt = epoch_end or state.iteration >= total_iters or \
                bool(args.ckpt_every_iters and state.iteration % args.ckpt_every_iters == 0)
            stopping = stop.requested(device, dist_info, sync_point=scheduled_ckpt or it % args.print_every == 0)
            ckpt_due = scheduled_ckpt or stopping
            if (it % args.print_every == 0 or ckpt_due) and guard.diverged():
                guard.roll_back(state, logger, it, result.x_q)
                bar.reset(total=total_iters)
                bar.update(state.iteration)
                continue
            finish_iteration(parts, state, logger, bar, result, it, epoch, lr, epoch_end, ckpt_due)
            if stopping and stop.signum is not None:
                logger.log(f"stopped by signal {stop.signum} at iteration {state.iteration}; "
                           f"continue with --resume {args.save_dir}")
                logger.close()
                return 128 + stop.signum
            if stopping:
                logger.log(f"--max_minutes {args.max_minutes:g} spent at iteration {state.iteration}")
                break
    if dist_info.enabled:
        logger.log(f"{dist_info.world} processes agree on the parameters: max |difference from rank 0| = "
                   f"{max_parameter_difference(parts.model, dist_info):.3g}")
    logger.log(f"finished at iteration {state.iteration}; run directory {args.save_dir}")
    logger.hparams(args, final_numbers(args.save_dir, state))
    logger.close()
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
