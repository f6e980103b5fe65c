"""Train an EBM on a toy 2-D dataset (Gaussian mixture, rings) and compare its density with the exact one.
Objectives: contrastive divergence with persistent chains (cd), or without chains: denoising or sliced score
matching (dsm, ssm), noise-contrastive estimation against the Gaussian fitted to the data (nce), Energy Matching's
flow from N(0, I) with its optional CD phase (energy_matching).

Writes density.png (truth, learned density, samples), training.png, metrics.json (KL and total variation to
the truth on a grid; log Z by quadrature and by AIS) and model.pt into --save_dir.
Example: python toy_2d.py --dataset mixture --n_iters 2000 --save_dir experiment/toy_mixture
"""
import json
import math
import os
import sys
import time

import torch

from models.energy_nets import PointEnergy
from utils.ais import ais_log_z
from utils.sampling.buffer import ReplayBuffer
from utils.checkpoint import atomic_torch_save, atomic_write_text
from utils.errors import ArgumentParser, UserError, nonneg_float, nonneg_int, positive_float, positive_int, probability, run_cli
from utils.run_dir import RunLogger, prepare_run_dir
from utils.sampling.samplers import SAMPLERS, run_sampler
from utils.toy import TOY_DATASETS, density_distances, grid_points
from utils.training import px_loss
from utils.training.chain_free import CHAIN_FREE_OBJECTIVES, dsm_loss, nce_loss, ssm_loss
from utils.training.energy_matching import EnergyMatchingLoss, check_energy_matching_flags

# upstream SGLD clamps to the image range [-1, 1]; points live on all of R^2
TOY_SAMPLERS = [s for s in SAMPLERS if s != "sgld"]


def build_parser():
    p = ArgumentParser("toy_2d.py", description=__doc__.split("\n")[0],
                       example="python toy_2d.py --dataset rings --save_dir experiment/toy_rings")
    p.add_argument("--dataset", default="mixture", choices=list(TOY_DATASETS),
                   help="mixture: 8 Gaussians (std 0.2) on a circle of radius 2; rings: radii 1, 2, 3 (std 0.08)")
    p.add_argument("--objective", default="cd", choices=["cd", *CHAIN_FREE_OBJECTIVES],
                   help="cd: contrastive divergence with a replay buffer; dsm / ssm / nce / energy_matching: as in "
                        "train_maebm.py (nce's noise: the Gaussian fitted to 10,000 data points; energy_matching's "
                        "starts: N(0, I), its sampler: --sampler flow); chain-free runs draw their plotted samples "
                        "with --sampler at the end")
    p.add_argument("--dsm_sigma", type=positive_float, default=0.1, help="dsm: the noise level")
    p.add_argument("--ssm_projections", type=positive_int, default=1, help="ssm: Rademacher projections per point")
    p.add_argument("--nce_ratio", type=positive_int, default=1, help="nce: noise draws per data point")
    p.add_argument("--time_cutoff", type=probability, default=1.0, help="energy_matching: as in train_maebm.py")
    p.add_argument("--cd_start_iter", type=nonneg_int, default=None,
                   help="energy_matching: iteration from which the CD term joins (default: never)")
    p.add_argument("--lambda_cd", type=nonneg_float, default=1e-3, help="energy_matching: weight of the CD term")
    p.add_argument("--cd_trim_fraction", type=probability, default=0.1, help="energy_matching: as in train_maebm.py")
    p.add_argument("--cd_neg_clamp", type=nonneg_float, default=0.02, help="energy_matching: as in train_maebm.py")
    p.add_argument("--n_iters", type=positive_int, default=2000, help="training iterations")
    p.add_argument("--batch_size", type=positive_int, default=256, help="data points and chains per iteration")
    p.add_argument("--hidden", type=positive_int, default=128, help="width of the two hidden Swish layers")
    p.add_argument("--prior_std", type=positive_float, default=3.0,
                   help="std of the Gaussian factor exp(-|x|^2 / 2 std^2) that keeps the density normalisable")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate (betas 0, 0.999 as in the tutorial recipe)")
    p.add_argument("--l2_coeff", type=nonneg_float, default=0.1, help="energy regulariser weight")
    p.add_argument("--reg", default="sym", choices=["asym", "sym"], help="as in train_maebm.py")
    p.add_argument("--sampler", default="langevin_exact", choices=TOY_SAMPLERS, help="as in train_maebm.py")
    p.add_argument("--n_steps", type=positive_int, default=20, help="sampler steps per iteration")
    p.add_argument("--sgld_lr", type=positive_float, default=0.1, help="sampler step size (eps for langevin_exact/mala)")
    p.add_argument("--sgld_std", type=nonneg_float, default=0.0, help="noise std (langevin, tutorial)")
    p.add_argument("--n_leapfrog", type=positive_int, default=10, help="hmc: leapfrog steps per proposal")
    p.add_argument("--buffer_size", type=positive_int, default=10000, help="replay buffer of persistent chains")
    p.add_argument("--reinit_freq", type=probability, default=0.05, help="fraction of chains restarted each draw")
    p.add_argument("--box", type=positive_float, default=4.0, help="fresh chains start uniform in [-box, box]^2; plot range")
    p.add_argument("--grid", type=positive_int, default=200, help="grid points per axis for plots and KL/TV")
    p.add_argument("--ais_chains", type=nonneg_int, default=1000, help="AIS chains for log Z (0: skip AIS)")
    p.add_argument("--ais_temps", type=positive_int, default=200, help="AIS intermediate temperatures")
    p.add_argument("--print_every", type=positive_int, default=100, help="iterations between metrics rows")
    p.add_argument("--save_dir", default="./experiment/toy_2d", help="run directory (refused if it holds a run)")
    p.add_argument("--overwrite", action="store_true", help="write into an existing run directory")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to train")
    p.add_argument("--seed", type=int, default=1, help="seed of every RNG")
    return p


@torch.no_grad()
def evaluate(model, true_log_density, args):
    """KL / TV to the truth on the plot grid, and log Z by quadrature over a box holding the prior's mass."""
    pts, cell = grid_points(args.box, args.grid)
    f = model(pts.to(args.device, torch.float32))[0].double().cpu()
    kl, tv = density_distances(true_log_density(pts), f, cell)
    wide = max(args.box, 6 * args.prior_std)
    wide_pts, wide_cell = grid_points(wide, 4 * args.grid)
    f_wide = torch.cat([model(chunk.to(args.device, torch.float32))[0].double().cpu()
                        for chunk in wide_pts.split(65536)])
    return {"kl_true_learned": kl, "tv": tv, "log_z_quadrature": float(torch.logsumexp(f_wide, 0)) + math.log(wide_cell)}, f


def plot(path, args, true_log_density, f_grid, data, samples):
    """Truth, learned density and samples (the replay buffer for cd, the --sampler chains for the others)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pts, _ = grid_points(args.box, args.grid)
    shape = (args.grid, args.grid)
    extent = (-args.box, args.box, -args.box, args.box)
    fig, ax = plt.subplots(1, 3, figsize=(13, 4.3))
    ax[0].imshow(true_log_density(pts).exp().view(shape), origin="lower", extent=extent, cmap="viridis")
    ax[0].set_title(f"true density ({args.dataset})")
    ax[1].imshow(torch.softmax(f_grid, 0).view(shape), origin="lower", extent=extent, cmap="viridis")
    ax[1].set_title("learned density exp(-E) / Z")
    ax[2].scatter(*data.T, s=2, alpha=0.4, label="data")
    ax[2].scatter(*samples.T, s=2, alpha=0.4,
                  label="replay buffer" if args.objective == "cd" else f"--sampler {args.sampler} chains")
    ax[2].set_xlim(-args.box, args.box)
    ax[2].set_ylim(-args.box, args.box)
    ax[2].set_aspect("equal")
    ax[2].legend(markerscale=5, loc="upper right")
    ax[2].set_title("samples")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training(path, rows):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.5))
    for a, key in zip(ax, ("loss", "energy_gap", "tv")):
        logged = [r for r in rows if r[key] is not None]
        a.plot([r["iteration"] for r in logged], [r[key] for r in logged])
        a.set_xlabel("iteration")
        a.set_title(key)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fitted_gaussian(points):
    """The Gaussian of a data sample's mean and covariance: NCE's noise, with an exact log density."""
    return torch.distributions.MultivariateNormal(points.mean(0), covariance_matrix=torch.cov(points.T))


def toy_loss(args, model, x_p, x_q, f_p, f_q, log_z, noise, em_loss, iteration):
    """The objective's loss on data x_p; x_q are the chains' samples (cd) or the noise draws (the others)."""
    neg_energy = lambda z: model(z)[0]
    if args.objective == "energy_matching":
        return em_loss(x_p, iteration=iteration)[0]
    if args.objective == "cd":
        return px_loss(f_p, f_q, args.l2_coeff, args.reg)
    if args.objective == "dsm":
        return dsm_loss(neg_energy, x_p, torch.full((len(x_p),), args.dsm_sigma, device=x_p.device),
                        torch.randn_like(x_p))[0]
    if args.objective == "ssm":
        x_rep = x_p.repeat(args.ssm_projections, 1)
        return ssm_loss(neg_energy, x_rep, torch.randn_like(x_rep).sign())[0]
    return nce_loss(f_p - log_z, f_q - log_z, noise.log_prob(x_p), noise.log_prob(x_q), args.nce_ratio)[0]


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    if args.objective == "energy_matching":
        check_energy_matching_flags(args)
    prepare_run_dir(args.save_dir, args.overwrite)
    logger = RunLogger(args.save_dir)
    logger.record_command(args)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    sample_data, true_log_density = TOY_DATASETS[args.dataset]
    model = PointEnergy(2, args.hidden, args.prior_std).to(device)
    log_z = torch.nn.Parameter(torch.zeros((), device=device))  # nce's learned normaliser
    optim = torch.optim.Adam([*model.parameters(), log_z], lr=args.lr, betas=(0.0, 0.999))
    start_fn = lambda n, y=None: (torch.rand(n, 2, device=device) * 2 - 1) * args.box
    buffer = ReplayBuffer(start_fn(args.buffer_size))
    noise = fitted_gaussian(sample_data(10000).float().to(device))
    em_loss = None
    if args.objective == "energy_matching":  # the paper's start: N(0, I); its sampler: the flow
        start_fn = lambda n, y=None: torch.randn(n, 2, device=device)
        em_loss = EnergyMatchingLoss(model, 1.0, 0.0, start_fn, (args.sampler, args.n_steps, args.sgld_lr,
                                                                  args.sgld_std),
                                     args.time_cutoff, args.cd_start_iter, args.lambda_cd, args.cd_trim_fraction,
                                     args.cd_neg_clamp, bounds=None)
    rows, started = [], time.time()
    loss = f_p = f_q = None
    for it in range(args.n_iters + 1):
        if it % args.print_every == 0 or it == args.n_iters:
            metrics, f_grid = evaluate(model, true_log_density, args)
            trained = loss is not None
            row = {"iteration": it, **metrics, "loss": float(loss.detach()) if trained else None,
                   "energy_gap": float(f_p.mean() - f_q.mean()) if trained else None}
            rows.append(row)
            logger.metrics(it, **row)
            logger.log(f"it {it}: " + " ".join(f"{k}={v:.4f}" for k, v in row.items() if k != "iteration" and v is not None))
        if it == args.n_iters:
            break
        x_p = sample_data(args.batch_size).float().to(device)
        if args.objective == "cd":
            x0, idx, steps = buffer.draw(args.batch_size, start_fn, args.reinit_freq)
            x_q, _ = run_sampler(args.sampler, model, x0, args.n_steps, args.sgld_lr, args.sgld_std, bounds=None,
                                 n_leapfrog=args.n_leapfrog)
            buffer.update(idx, x_q, steps + args.n_steps)
        else:
            x_q = noise.sample((args.nce_ratio * args.batch_size,))  # the energy gap is read against the noise
        f_p, f_q = model(x_p)[0], model(x_q)[0]
        loss = toy_loss(args, model, x_p, x_q, f_p, f_q, log_z, noise, em_loss, it)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
    final = dict(rows[-1])
    final["minutes"] = (time.time() - started) / 60
    if args.objective == "nce":
        final["log_z_nce"] = float(log_z)
    if args.ais_chains:
        model_d = PointEnergy(2, args.hidden, args.prior_std).double()
        model_d.load_state_dict({k: v.double().cpu() for k, v in model.state_dict().items()})
        for p in model_d.parameters():
            p.requires_grad_(False)
        final["log_z_ais"], final["log_z_ais_se"] = ais_log_z(lambda z: -model_d(z)[0], 2, n_chains=args.ais_chains,
                                                              n_temps=args.ais_temps, base_std=args.prior_std)
    if args.objective != "cd":  # the chain-free model's samples: --sampler chains from the start
        buffer.samples, _ = run_sampler(args.sampler, model, start_fn(2000), args.n_steps, args.sgld_lr,
                                        args.sgld_std, bounds=None, n_leapfrog=args.n_leapfrog,
                                        time_cutoff=args.time_cutoff)
    data = sample_data(2000).float()
    plot(os.path.join(args.save_dir, "density.png"), args, true_log_density, f_grid, data, buffer.samples[:2000].cpu())
    plot_training(os.path.join(args.save_dir, "training.png"), rows)
    atomic_torch_save({"model_state_dict": model.state_dict(), "replay_buffer": buffer.samples.cpu(),
                       "args_json": json.dumps(vars(args))}, os.path.join(args.save_dir, "model.pt"))
    atomic_write_text(os.path.join(args.save_dir, "metrics.json"), json.dumps(final, indent=2))
    logger.log("final: " + " ".join(f"{k}={v:.4f}" for k, v in final.items() if k != "iteration" and v is not None)
               + f"; figures in {args.save_dir}")
    logger.close()
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
