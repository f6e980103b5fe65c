"""Stopping a run cleanly: a signal or a spent wall-clock budget ends it after the current iteration."""
import signal
import time

import torch

from utils.distributed import max_over_ranks


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
        """Whether to stop after this iteration. Under torchrun every rank must stop at the same one, for the same
        reason (a signal to any rank stops every rank as a signal), which takes an all-reduce and a host read: that
        happens only at `sync_point`s (iterations that log or checkpoint, where the loop reads the device anyway)."""
        if not dist_info.enabled:
            return self.signum is not None or self.out_of_time()
        if not sync_point:
            return False
        local = torch.tensor([self.signum or 0, int(self.out_of_time())], dtype=torch.int32, device=device)
        signum, out_of_time = max_over_ranks(local, dist_info).tolist()
        if signum:
            self.signum = signum
        return bool(signum or out_of_time)
