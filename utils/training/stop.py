"""Stopping a run cleanly: a signal or a spent wall-clock budget ends it after the current iteration."""
import signal
import time

import torch

from utils.distributed import any_rank


class StopRequest:
    """Records SIGTERM/SIGINT, or a spent --max_minutes budget, so the loop can finish its iteration, checkpoint
    and exit."""

    def __init__(self, max_minutes=0.0):
        self.signum = None
        self.deadline = time.monotonic() + 60 * max_minutes if max_minutes > 0 else None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.signum = signum

    def out_of_time(self):
        return self.deadline is not None and time.monotonic() >= self.deadline

    def requested(self, device, dist_info, sync_point):
        """Whether to stop after this iteration. Under torchrun every rank must stop at the same one, which takes an
        all-reduce and a host read: that happens only at `sync_point`s (iterations that log or checkpoint, where the
        loop reads the device anyway), never on the others."""
        wanted = self.signum is not None or self.out_of_time()
        if not dist_info.enabled:
            return wanted
        return sync_point and bool(any_rank(torch.tensor(wanted, device=device), dist_info))
