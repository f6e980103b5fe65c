"""What every iteration does, decided once from the flags: which terms the loss has, whether chains are drawn
and with which labels."""
from dataclasses import dataclass

import torch

from utils.errors import UserError
from utils.training.chain_free import CHAIN_FREE_OBJECTIVES
from utils.training.energy_matching import check_energy_matching_flags
from utils.training.objectives import CONDITIONAL_OBJECTIVES, has_generative_term


@dataclass(frozen=True)
class TrainPlan:
    generative: bool  # the loss has a p(x) or p(x, y) term
    sampling: bool  # chains are drawn: for that term, or (--thermo) for measurement alone
    classifying: bool  # the loss has the p(y|x) cross-entropy
    conditional_chains: bool  # j_ebm / gcl: chains given the data batch's labels
    class_cond_chains: bool  # --class_cond_p_x_sample: chains given uniformly drawn classes
    n_classes: int

    @property
    def class_blocked(self):
        """Chains drawn given a class need a buffer split into class blocks."""
        return self.conditional_chains or self.class_cond_chains

    def chain_labels(self, y_data, batch_size, device):
        """The labels the iteration's chains are drawn given (None: unconditional chains)."""
        if self.conditional_chains:
            return y_data
        if self.class_cond_chains:
            return torch.randint(0, self.n_classes, (batch_size,), device=device)
        return None


def make_plan(args, n_classes, world):
    """The TrainPlan of these flags, after refusing combinations that cannot train."""
    generative = args.px > 0 and has_generative_term(args.objective)
    chain_free = args.objective in CHAIN_FREE_OBJECTIVES
    plan = TrainPlan(generative=generative, sampling=(generative and not chain_free) or args.thermo,
                     classifying=args.pyx > 0 or not has_generative_term(args.objective),
                     conditional_chains=args.objective in CONDITIONAL_OBJECTIVES,
                     class_cond_chains=args.class_cond_p_x_sample, n_classes=n_classes)
    if not has_generative_term(args.objective) and args.pyx == 0:
        raise UserError(f"--objective {args.objective} trains only the cross-entropy, but --pyx is 0")
    if getattr(args, "ema_chains", False) and not args.ema:
        raise UserError("--ema_chains samples the averaged model; give --ema DECAY too")
    if chain_free and (args.class_cond_p_x_sample or getattr(args, "ema_chains", False)):
        flag = "--class_cond_p_x_sample" if args.class_cond_p_x_sample else "--ema_chains"
        raise UserError(f"{flag} sets how training draws its chains; --objective {args.objective} draws none")
    if args.objective == "ssm" and args.px > 0 and args.norm in ("batch", "instance") and args.model in ("wrn", "cnn"):
        raise UserError(f"--norm {args.norm}: --objective ssm takes third derivatives through the net, which "
                        "PyTorch's batch and instance norm do not support; use --norm layer, act or none")
    if args.objective == "energy_matching" and args.px > 0:
        check_energy_matching_flags(args)
    if args.objective == "nce" and args.init == "data":
        raise UserError("--objective nce needs a noise with an exact density: --init u, n, gm or gm_class, not data")
    if args.px == 0 and args.pyx == 0:
        raise UserError("--px and --pyx are both 0: nothing to train")
    if args.uncond and plan.class_blocked:
        flag = f"--objective {args.objective}" if plan.conditional_chains else "--class_cond_p_x_sample"
        raise UserError(f"{flag} needs class logits as energies; it cannot be used with --uncond")
    if getattr(args, "plot_cond", False) and not (plan.classifying or plan.class_blocked):
        raise UserError("--plot_cond: class-conditional grids need energies that know the class: train the classifier "
                        "(--pyx > 0) or chains given classes (--objective j_ebm, --class_cond_p_x_sample)")
    if args.model == "wrn" and (args.depth - 4) % 6:
        raise UserError(f"--depth: Wide-ResNet depth must be 6n+4 (10, 16, 22, 28, ...), got {args.depth}")
    if args.px > 0 and plan.class_blocked and args.buffer_size % n_classes:
        flag = f"--objective {args.objective}" if plan.conditional_chains else "--class_cond_p_x_sample"
        raise UserError(f"--buffer_size: {args.buffer_size} is not divisible by the {n_classes} classes (needed by {flag})")
    if plan.sampling and args.buffer_size % world:
        raise UserError(f"--buffer_size: {args.buffer_size} is not divisible by the {world} processes")
    return plan
