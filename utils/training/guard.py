"""The divergence guard: a device-side health flag, and the rollback to the last good checkpoint."""
import os

import torch

from utils.distributed import any_rank, main_only
from utils.errors import UserError
from utils.run_dir import save_grid


class DivergenceGuard:
    """Collects non-finite samples or losses, and |loss| > --diverge_threshold, without a host sync; read only
    when the loop logs or is about to checkpoint, so a checkpoint never holds a diverged state."""

    def __init__(self, args, device, dist_info):
        self.args, self.dist = args, dist_info
        self.bad = torch.zeros((), dtype=torch.bool, device=device)

    def flag(self, condition):
        self.bad |= condition

    def diverged(self):
        return bool(any_rank(self.bad, self.dist))

    def roll_back(self, state, logger, iteration, x_q):
        """Restore the last good checkpoint with the lr scaled by --rollback_lr_factor and a new seed; past
        --max_rollbacks, stop with one line."""
        args = self.args
        if x_q is not None and not args.novis and self.dist.is_main:
            with main_only(self.dist, "the divergence grid"):
                save_grid(x_q, os.path.join(args.save_dir, f"diverge_{state.epoch}_{iteration:08d}.png"))
        if state.rollbacks >= args.max_rollbacks:
            raise UserError(f"training diverged at iteration {iteration} after {state.rollbacks} rollbacks "
                            f"(see --max_rollbacks); samples saved as diverge_*.png in {args.save_dir}")
        lr_scale, rollbacks = state.lr_scale * args.rollback_lr_factor, state.rollbacks + 1
        # Diverging again before passing a newer checkpoint means that checkpoint may already be on its way out:
        # go one further back.
        last = state.rolled_back_to
        again = last is not None and state.ckpts.rolling()[0][0] <= last
        try:
            ckpt, path, _ = state.ckpts.newest_loadable(before=last if again else None)
        except UserError:
            ckpt, path, _ = state.ckpts.newest_loadable()
        state.restore(ckpt, logger)
        state.lr_scale, state.rollbacks, state.rolled_back_to = lr_scale, rollbacks, ckpt["iteration"]
        torch.manual_seed(args.seed + 7919 * rollbacks + self.dist.rank)
        self.bad.zero_()
        logger.log(f"divergence at iteration {iteration}: rolled back to {path} (iteration {state.iteration}), "
                   f"lr scaled to x{lr_scale:g} (rollback {rollbacks}/{args.max_rollbacks})")
