"""Energy Matching (Balcerak et al., NeurIPS 2025): one time-independent energy whose negative gradient first
regresses the velocity of straight, minibatch-OT-paired paths from the chain starts to the data (no MCMC), then,
from --cd_start_iter on, also a contrastive-divergence term on negatives drawn by the flow sampler (gradient flow,
then a Langevin tail), so that near the data the energy is a Boltzmann density."""
from scipy.optimize import linear_sum_assignment
import torch

from models.energy import weights_frozen
from utils.errors import UserError
from utils.sampling.frozen import frozen_model_state
from utils.sampling.samplers import chains_in_train_mode, run_sampler
from utils.training.chain_free import ChainFreeLoss, score


def check_energy_matching_flags(args):
    """The flags energy_matching needs, refused with one line otherwise (train_maebm.py and toy_2d.py alike)."""
    if args.sampler != "flow":
        raise UserError(f"--sampler {args.sampler}: --objective energy_matching draws its negatives and samples with "
                        "its gradient flow; give --sampler flow (e.g. --n_steps 200 --sgld_lr 0.01 --sgld_std 0.014)")
    if args.cd_trim_fraction >= 1:
        raise UserError(f"--cd_trim_fraction: expected a fraction in [0, 1), got {args.cd_trim_fraction}")


def ot_pairing(x0, x1):
    """The permutation p minimising sum_i ||x0[p[i]] - x1[i]||^2: the exact OT plan between two equal, uniformly
    weighted minibatches (a permutation, so each start is used once)."""
    cost = torch.cdist(x0.flatten(1).double(), x1.flatten(1).double()) ** 2
    # scipy's assignment runs on the host: one batch x batch transfer per iteration, outside any chain
    starts, targets = linear_sum_assignment(cost.cpu().numpy())
    perm = torch.empty(len(targets), dtype=torch.long)
    perm[torch.as_tensor(targets)] = torch.as_tensor(starts)
    return perm.to(x0.device)


def flow_weight(t, cutoff):
    """The flow term's weight at path time t: 1 before `cutoff`, falling linearly to 0 at t = 1."""
    if cutoff >= 1:
        return torch.ones_like(t)
    return ((1 - t) / (1 - cutoff)).clamp(0, 1)


def flow_matching_loss(neg_energy, x0, x1, t, cutoff=1.0):
    """(loss, f at the path points): mean over images of flow_weight(t) x the per-pixel mean of
    (grad_x f(x_t) - (x1 - x0))^2 at x_t = (1 - t) x0 + t x1, with x0 already paired to x1."""
    tt = t.view(-1, *[1] * (x0.dim() - 1))
    _, f, s = score(neg_energy, (1 - tt) * x0 + tt * x1)
    mse = ((s - (x1 - x0)) ** 2).flatten(1).mean(1)
    return (flow_weight(t, cutoff) * mse).mean(), f


def trimmed_cd(f_data, f_neg, trim, weight, neg_clamp):
    """weight x (mean E(data) - mean E(negatives)), E = -f, without the `trim` fraction of negatives of highest
    energy, and held above -neg_clamp (0: no floor), as the paper's CD term."""
    e_neg = (-f_neg).sort().values
    e_neg = e_neg[:len(e_neg) - int(trim * len(e_neg))]
    value = weight * ((-f_data).mean() - e_neg.mean())
    return value.clamp(min=-neg_clamp) if neg_clamp > 0 else value


class EnergyMatchingLoss(ChainFreeLoss):
    """px x (the flow term, plus from iteration `cd_start` the CD term) + pyx x cross-entropy. `start_fn(n)` draws
    the path starts and the negatives' starts; `sampler` = (name, steps, dt, noise std), its noise schedule set by
    the same `cutoff` as the flow term's weights (the paper's one time_cutoff); `bounds`: the negatives' clamp (None
    for points in R^n)."""

    def __init__(self, model, px, pyx, start_fn, sampler, cutoff, cd_start, cd_weight, cd_trim, cd_neg_clamp,
                 bounds=(-1, 1)):
        super().__init__(model, "energy_matching", px, pyx)
        self.start_fn, self.sampler, self.cutoff, self.bounds = start_fn, sampler, cutoff, bounds
        self.cd_start, self.cd_weight, self.cd_trim, self.cd_neg_clamp = cd_start, cd_weight, cd_trim, cd_neg_clamp

    def cd_phase(self, iteration):
        return self.cd_start is not None and iteration >= self.cd_start

    def negatives(self, n):
        """Negatives from fresh starts through the flow sampler, the weights frozen, the model in the mode that
        every chain of this objective runs in."""
        name, steps, dt, std = self.sampler
        x0 = self.start_fn(n)
        with frozen_model_state(self.model, train=chains_in_train_mode(name, True, False)) as model, \
                weights_frozen(model):
            x, _ = run_sampler(name, model, x0, steps, dt, std, bounds=self.bounds, time_cutoff=self.cutoff)
        return x

    def generative_term(self, x, iteration=0):
        # negatives first: restoring the model's state after the chains writes into the weights in place, which
        # would invalidate a graph built before
        x_neg = self.negatives(len(x)) if self.cd_phase(iteration) else None
        x0 = self.start_fn(len(x))
        x0 = x0[ot_pairing(x0, x)]
        t = torch.rand(len(x), device=x.device)
        loss, f = flow_matching_loss(self.neg_energy, x0, x, t, self.cutoff)
        logs = {"loss/flow": loss.detach(), "energy/f_path": f.detach().mean()}
        if x_neg is not None:
            f_data, f_neg = self.neg_energy(x), self.neg_energy(x_neg)
            cd = trimmed_cd(f_data, f_neg, self.cd_trim, self.cd_weight, self.cd_neg_clamp)
            loss = loss + cd
            logs.update({"loss/cd": cd.detach(), "energy/f_data": f_data.detach().mean(),
                         "energy/f_negatives": f_neg.detach().mean()})
        return loss, logs
