"""Run directories: refuse to clobber, record the command, log text, metrics and TensorBoard."""
import fcntl
import json
import math
import os
import sys
import time

from utils.checkpoint import atomic_write_text
from utils.errors import UserError


class RunLock:
    """This process's exclusive hold on a run directory for its whole life. An flock: the kernel releases it on
    any exit, a crash or SIGKILL included, so a lock left behind is never stale."""

    def __init__(self, save_dir):
        self.fh = open(os.path.join(save_dir, ".lock"), "a+")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.fh.seek(0)
            holder = self.fh.read().strip() or "unknown"
            self.fh.close()
            raise UserError(f"--save_dir: {save_dir} is being written by process {holder}; a run directory has one "
                            "writer (wait for it to finish or stop it)") from None
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(f"{os.getpid()}\n")
        self.fh.flush()

    def release(self):
        self.fh.close()


def _run_files(save_dir):
    return [n for n in os.listdir(save_dir) if n != ".lock" and not n.startswith("overwritten_")]


def prepare_run_dir(save_dir, overwrite=False, resume=False):
    """Create and lock `save_dir` (and samples/); an existing run needs --resume or --overwrite. --overwrite moves
    the old run's files into save_dir/overwritten_<date>_<time>/ first, so nothing of it is read, kept beside
    the new run or deleted. Returns (the RunLock to hold, the archive folder or None)."""
    if os.path.exists(save_dir) and not os.path.isdir(save_dir):
        raise UserError(f"--save_dir: {save_dir} exists and is not a directory")
    old = os.path.isdir(save_dir) and bool(_run_files(save_dir))
    if old and not (overwrite or resume):
        raise UserError(f"--save_dir: {save_dir} already holds a run; pass --resume {save_dir} to continue it "
                        "or --overwrite to write into it")
    try:
        os.makedirs(save_dir, exist_ok=True)
        lock = RunLock(save_dir)
        archive = None
        if old and overwrite and not resume:
            stamp, n = time.strftime("%Y%m%d_%H%M%S"), 0
            while os.path.exists(archive := os.path.join(save_dir, f"overwritten_{stamp}" + (f"_{n}" if n else ""))):
                n += 1
            os.makedirs(archive)
            for name in _run_files(save_dir):
                os.rename(os.path.join(save_dir, name), os.path.join(archive, name))
        os.makedirs(os.path.join(save_dir, "samples"), exist_ok=True)
        probe = os.path.join(save_dir, ".write_test")
        with open(probe, "w") as fh:
            fh.write("ok")
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"--save_dir: cannot write to {save_dir} ({e.strerror})") from None
    return lock, archive


def read_metrics(path):
    """The rows of a metrics.jsonl; a torn last line (a run killed while writing it) is left out."""
    if not os.path.exists(path):
        return []
    lines = open(path).read().splitlines()
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except ValueError:
            if i < len(lines) - 1:
                raise UserError(f"{path} line {i + 1} is not JSON; the file is damaged") from None
    return rows


class RunLogger:
    """Text log, JSON-lines metrics and TensorBoard scalars of one run (rank 0 only); `mirror` (a WandbMirror) gets
    the same scalars, images and final numbers."""

    def __init__(self, save_dir, enabled=True, tensorboard=True):
        self.save_dir = save_dir
        self.enabled = enabled
        self.tensorboard = tensorboard
        self.mirror = None  # set once the run directory holds the run (open_run_dir)
        self.writer = None  # created on the first metrics, so a run that fails early leaves no event file

    def record_command(self, args):
        if not self.enabled:
            return
        atomic_write_text(os.path.join(self.save_dir, "args.json"), json.dumps(vars(args), indent=2, sort_keys=True))
        with open(os.path.join(self.save_dir, "command.txt"), "a") as fh:
            fh.write(" ".join([os.path.basename(sys.executable)] + sys.argv) + "\n")

    def log(self, message, echo=True):
        if not self.enabled:
            return
        line = time.strftime("%Y-%m-%d %H:%M:%S ") + message
        with open(os.path.join(self.save_dir, "log.txt"), "a") as fh:
            fh.write(line + "\n")
        if echo:
            from tqdm import tqdm
            tqdm.write(message)

    def metrics(self, step, **values):
        """Append one JSON line and the TensorBoard scalars for `step`."""
        if not self.enabled:
            return
        with open(os.path.join(self.save_dir, "metrics.jsonl"), "a") as fh:
            fh.write(json.dumps({"iteration": step, **values}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        if self.tensorboard:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self._writer().add_scalar(key, value, step)
        if self.mirror is not None:
            self.mirror.scalars(step, values)

    def image(self, tag, images, step):
        """A grid of images in [-1, 1] in TensorBoard."""
        if not self.enabled or not (self.tensorboard or self.mirror is not None):
            return
        import torchvision.utils as vutils
        grid = vutils.make_grid(images.detach().float().cpu()[:64], normalize=True, value_range=(-1, 1))
        if self.tensorboard:
            self._writer().add_image(tag, grid, step)
        if self.mirror is not None:
            self.mirror.image(tag, grid, step)

    def hparams(self, args, final):
        """The run's flags as TensorBoard hparams, with its final numbers as their metrics."""
        if self.enabled and self.tensorboard:
            flags = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in vars(args).items()}
            self._writer().add_hparams(flags, {f"hparam/{k}": v for k, v in final.items()}, run_name="hparams")
        if self.enabled and self.mirror is not None:
            self.mirror.summary(final)

    def _writer(self):
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(os.path.join(self.save_dir, "tb"))
        return self.writer

    def truncate_metrics(self, iteration):
        """On resume: drop metric rows the resumed run will write again (and any torn last line)."""
        path = os.path.join(self.save_dir, "metrics.jsonl")
        if not self.enabled or not os.path.exists(path):
            return
        kept = []
        for row in read_metrics(path):
            is_eval = any(k.startswith(("test/", "eval/")) for k in row)
            if row.get("iteration", 0) < iteration or (is_eval and row["iteration"] <= iteration):
                kept.append(json.dumps(row) + "\n")
        atomic_write_text(path, "".join(kept))

    def close(self):
        if self.writer is not None:
            self.writer.close()
        if self.mirror is not None:
            self.mirror.close()
            self.mirror = None


def save_grid(x, path, nrow=None):
    """A PNG grid of images in [-1,1] (nrow per row; default: a square)."""
    import torchvision.utils as vutils
    vutils.save_image(x.detach().float().cpu(), path, nrow=nrow or int(math.ceil(math.sqrt(len(x)))),
                      normalize=True, value_range=(-1, 1))
