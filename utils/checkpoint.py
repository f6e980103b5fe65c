"""Atomic file writes, checkpoints loaded with weights_only=True, and RNG state capture."""
import io
import json
import os
import random
import tempfile

import numpy as np
import torch

from utils.errors import UserError
from utils.upstream import is_upstream_checkpoint

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path, data):
    """Write `data` to `path` via a temp file, fsync and rename, so readers never see half a file."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give them the usual permissions
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise UserError(f"cannot write {path}: {e.strerror or e}; the previous file is unchanged") from None
        raise
    try:
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj, path):
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path, map_location="cpu", allow_upstream=False):
    """Load a checkpoint with weights_only=True; a missing, truncated or unsafe file is a UserError.
    With `allow_upstream`, a checkpoint of the upstream M-EBM code loads too, marked ckpt["upstream"]."""
    if not os.path.isfile(path):
        raise UserError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise UserError(f"checkpoint {path} is corrupt, truncated or not a checkpoint of this tool "
                        f"({type(e).__name__})") from None
    upstream = allow_upstream and is_upstream_checkpoint(ckpt)
    if not upstream and (not isinstance(ckpt, dict) or "model_state_dict" not in ckpt or "args_json" not in ckpt):
        raise UserError(f"checkpoint {path} is not a checkpoint of this tool (no model_state_dict/args)")
    buffer = ckpt.get("replay_buffer")
    if not isinstance(buffer, torch.Tensor) or buffer.numel() == 0:  # upstream stores [] without a buffer
        buffer = ckpt["replay_buffer"] = None
    if buffer is not None and not torch.isfinite(buffer).all():
        raise UserError(f"checkpoint {path} holds NaN or inf in its replay buffer")
    if any(torch.is_floating_point(v) and not torch.isfinite(v).all() for v in ckpt["model_state_dict"].values()):
        raise UserError(f"checkpoint {path} holds NaN or inf in its model weights")
    if upstream:
        ckpt["upstream"] = True
    else:
        ckpt["args"] = json.loads(ckpt["args_json"])
    return ckpt


def rng_state(device=None):
    """Every RNG the training loop touches, as tensors and plain data (weights_only-loadable): of CUDA's, only the
    training device's generator, so that a checkpoint resumes wherever any number of GPUs is visible."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if device is not None and torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state, device=None):
    """Restore rng_state()'s RNGs; the CUDA generator of `device` only. Older checkpoints hold every visible GPU's
    state: the one at the training device's index is used when they have it."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is None or device is None or torch.device(device).type != "cuda":
        return
    index = torch.device(device).index or 0
    if isinstance(cuda, (list, tuple)):
        cuda = cuda[index] if index < len(cuda) else None
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


class CheckpointDir:
    """Rolling checkpoints `ckpt_iter_{N}.pt` (the newest `keep` kept) with `last_ckpt.pt` linked to the newest."""

    def __init__(self, run_dir, keep=3):
        self.run_dir, self.keep = run_dir, keep

    def rolling(self):
        """[(iteration, path)] of the rolling checkpoints, newest first."""
        found = []
        for name in os.listdir(self.run_dir):
            if name.startswith("ckpt_iter_") and name.endswith(".pt") and name[10:-3].isdigit():
                found.append((int(name[10:-3]), os.path.join(self.run_dir, name)))
        return sorted(found, reverse=True)

    def save(self, payload, iteration):
        path = os.path.join(self.run_dir, f"ckpt_iter_{iteration:08d}.pt")
        atomic_torch_save(payload, path)
        last = os.path.join(self.run_dir, "last_ckpt.pt")
        tmp = last + ".link.tmp"
        try:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.link(path, tmp)
            os.replace(tmp, last)
        except OSError:  # no hard links on this file system: write a second copy
            atomic_torch_save(payload, last)
        for _, old in self.rolling()[self.keep:]:
            os.unlink(old)

    def newest_loadable(self, before=None):
        """(checkpoint, path, errors): the newest readable checkpoint, optionally older than iteration `before`."""
        candidates = self.rolling()
        if not candidates and os.path.exists(os.path.join(self.run_dir, "last_ckpt.pt")):
            candidates = [(None, os.path.join(self.run_dir, "last_ckpt.pt"))]
        errors = []
        for iteration, path in candidates:
            if before is not None and iteration is not None and iteration >= before:
                continue
            try:
                return load_checkpoint(path), path, errors
            except UserError as e:
                errors.append(str(e))
        raise UserError(f"no loadable checkpoint in {self.run_dir}" + (f" ({errors[0]})" if errors else ""))
