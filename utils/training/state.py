"""TrainState: everything a checkpoint holds, and the one place where the checkpoint format is written and read."""
import json
import os

import torch

from models import load_weights
from utils.checkpoint import atomic_torch_save, atomic_write_text, rng_state, set_rng_state
from utils.distributed import gather_cat, gather_objects, on_main
from utils.errors import UserError
from utils.thermo import to_csv as thermo_csv

COUNTERS = ("iteration", "epoch", "batch", "best_valid_acc", "lr_scale", "rollbacks", "rolled_back_to")


class TrainState:
    """Model, optimizer, the --ema average, this rank's buffer shard, data positions, RNGs, --thermo records and the
    loop counters (iteration, epoch, batch within it, best validation accuracy, rollback lr scale and count)."""

    def __init__(self, args, arch, model, optim, buffer, px_stream, lab_stream, thermo, ckpts, dist_info, ema=None):
        self.args, self.arch, self.model, self.optim, self.buffer, self.ema = args, arch, model, optim, buffer, ema
        self.px_stream, self.lab_stream, self.thermo, self.ckpts, self.dist = px_stream, lab_stream, thermo, ckpts, dist_info
        self.iteration = self.epoch = self.batch = self.rollbacks = 0
        self.best_valid_acc, self.lr_scale, self.rolled_back_to = -1.0, 1.0, None

    def _device(self):
        return next(self.model.parameters()).device

    def _shard(self, samples):
        n = len(samples) // self.dist.world
        return samples[self.dist.rank * n:(self.dist.rank + 1) * n].to(self.buffer.samples.device)

    def _restore_buffer(self, ckpt):
        """This rank's share of the checkpoint's chains and their step counts (zeros where it predates them)."""
        self.buffer.samples = self._shard(ckpt["replay_buffer"])
        steps = ckpt.get("buffer_steps")
        self.buffer.steps = self._shard(steps) if steps is not None else \
            torch.zeros(len(self.buffer.samples), dtype=torch.long, device=self.buffer.samples.device)

    def save(self, name=None):
        """Write a rolling checkpoint (and last_ckpt.pt), or the file `name`; every rank takes part."""
        samples = gather_cat(self.buffer.samples, self.dist) if self.buffer is not None else None
        steps = gather_cat(self.buffer.steps, self.dist) if self.buffer is not None else None
        rngs = gather_objects(rng_state(self._device()), self.dist)

        def write():
            payload = {"model_state_dict": self.model.state_dict(), "optimizer_state_dict": self.optim.state_dict(),
                       "ema_state_dict": self.ema.state_dict() if self.ema is not None else None,
                       "replay_buffer": samples, "buffer_steps": steps, "rng": rngs, "arch": self.arch, "args_json": json.dumps(vars(self.args)),
                       **{k: getattr(self, k) for k in COUNTERS}, "px_stream": self.px_stream.position(),
                       "lab_stream": self.lab_stream.position(),
                       "thermo": self.thermo.state_dict() if self.thermo is not None else None}
            if self.thermo is not None:
                atomic_write_text(os.path.join(self.args.save_dir, "thermo.csv"), thermo_csv(payload["thermo"]["history"]))
            if name is None:
                self.ckpts.save(payload, self.iteration)
            else:
                atomic_torch_save(payload, os.path.join(self.args.save_dir, name))
        on_main(write, self.dist)

    def restore(self, ckpt, logger):
        """Continue exactly where `ckpt` stopped; metrics.jsonl keeps one trajectory with increasing iterations
        (the rows of an abandoned, diverged stretch stay in log.txt)."""
        if len(ckpt["rng"]) != self.dist.world:
            raise UserError(f"checkpoint was written by {len(ckpt['rng'])} process(es); resume it with as many")
        self.model.load_state_dict(ckpt["model_state_dict"])
        self.optim.load_state_dict(ckpt["optimizer_state_dict"])
        if self.ema is not None:
            if ckpt.get("ema_state_dict") is None:  # a run without --ema continued with it: average from here
                self.ema.reset_to(self.model)
                logger.log("--ema: the checkpoint holds no average; it starts from the resumed weights")
            else:
                self.ema.load_state_dict(ckpt["ema_state_dict"])
        if self.buffer is not None:
            self._restore_buffer(ckpt)
        for k in COUNTERS:
            setattr(self, k, ckpt[k])
        self.px_stream.seek(**ckpt["px_stream"])
        self.lab_stream.seek(**ckpt["lab_stream"])
        set_rng_state(ckpt["rng"][self.dist.rank], self._device())
        if self.thermo is not None and ckpt.get("thermo") is not None:
            self.thermo.load_state_dict(ckpt["thermo"])
        logger.truncate_metrics(self.iteration)

    def start_from(self, ckpt, path, logger):
        """--load_path: the weights, and the buffer where its size matches; the counters start at 0."""
        load_weights(self.model, ckpt["model_state_dict"], path)
        if self.ema is not None:
            self.ema.reset_to(self.model)
        saved = ckpt.get("replay_buffer")
        if self.buffer is not None and saved is not None and len(saved) == self.args.buffer_size:
            self._restore_buffer(ckpt)
        logger.log(f"loaded weights from {path}")

    def advance(self, iters_per_epoch):
        """Count one finished iteration; True when it ended an epoch."""
        self.iteration, self.batch = self.iteration + 1, self.batch + 1
        if self.batch == iters_per_epoch:
            self.epoch, self.batch = self.epoch + 1, 0
            return True
        return False
