"""Weights & Biases for a run (--wandb PROJECT): the scalars, images and flags that TensorBoard gets, mirrored.

wandb is an optional dependency. WANDB_MODE=offline writes the run under RUN/wandb/ for a later `wandb sync`.
"""
import importlib.util
import os
import uuid

from utils.checkpoint import atomic_write_text
from utils.errors import UserError


def require_wandb(project):
    """Refuse --wandb before anything is written when the package is missing or the project name is empty."""
    if project is None:
        return
    if not project.strip():
        raise UserError("--wandb: expected a project name, got an empty one")
    if importlib.util.find_spec("wandb") is None:
        raise UserError("--wandb: the wandb package is not installed (pip install wandb), or leave --wandb out")


class WandbMirror:
    """One wandb run per run directory: a resumed run continues the same wandb run (its id is kept in the folder)."""

    def __init__(self, project, save_dir, flags):
        import wandb
        self.wandb = wandb
        id_file = os.path.join(save_dir, "wandb_id.txt")
        run_id = open(id_file).read().strip() if os.path.exists(id_file) else uuid.uuid4().hex[:8]
        self.run = wandb.init(project=project, dir=save_dir, id=run_id, resume="allow", config=flags,
                              name=os.path.basename(os.path.normpath(save_dir)))
        atomic_write_text(id_file, run_id + "\n")

    def scalars(self, step, values):
        self.run.log({k: v for k, v in values.items() if isinstance(v, (int, float))}, step=step)

    def image(self, tag, grid, step):
        """`grid`: a (3, H, W) tensor in [0, 1], as TensorBoard's add_image takes it."""
        self.run.log({tag: self.wandb.Image(grid.permute(1, 2, 0).numpy())}, step=step)

    def summary(self, final):
        self.run.summary.update(final)

    def close(self):
        self.run.finish()
