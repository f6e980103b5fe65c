"""Run a script under torchrun with every torch.distributed collective it issues recorded, per rank, one JSON line
each in LOG_DIR/rank<R>.jsonl: `torchrun ... tests/record_collectives.py LOG_DIR SCRIPT [ARGS...]`.

SyncBatchNorm runs on CUDA only in torch (and --sync_bn refuses the CPU); here it is modelled on the CPU: its
forward in train mode all-gathers the per-rank statistics as the CUDA path does (the collective that every rank
must enter), then normalises with the local ones. RECORD_SIGTERM_AT=<rank>:<n> makes that rank send itself SIGTERM
right after its n-th collective.
"""
import json
import os
import runpy
import signal
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.nn.modules.batchnorm import _BatchNorm  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from utils.distributed import patched_collectives  # noqa: E402
import utils.training.setup  # noqa: E402


def signature(value):
    """What must match across ranks: tensor shapes and dtypes (objects are pickled to sizes that may differ)."""
    if isinstance(value, torch.Tensor):
        return f"{list(value.shape)}:{str(value.dtype).removeprefix('torch.')}"
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
        return [signature(v) for v in value]
    return None


def modelled_sync_batch_norm(self, x):
    if self.training and dist.is_initialized() and dist.get_world_size() > 1:
        dims = [0, *range(2, x.dim())]
        local = torch.cat([x.detach().mean(dims), x.detach().var(dims, unbiased=False)])
        dist.all_gather([torch.empty_like(local) for _ in range(dist.get_world_size())], local)
    return _BatchNorm.forward(self, x)


def main():
    log_dir, script, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    rank = int(os.environ.get("RANK", "0"))
    os.makedirs(log_dir, exist_ok=True)
    log = open(os.path.join(log_dir, f"rank{rank}.jsonl"), "w", buffering=1)
    target, _, count = os.environ.get("RECORD_SIGTERM_AT", "").partition(":")
    kill_rank, kill_after = (int(target), int(count)) if count else (None, None)
    calls = [0]

    def record(name, fn):
        def call(*a, **kw):
            log.write(json.dumps({"op": name, "args": [signature(v) for v in a if signature(v) is not None]}) + "\n")
            out = fn(*a, **kw)
            calls[0] += 1
            if rank == kill_rank and calls[0] == kill_after:
                os.kill(os.getpid(), signal.SIGTERM)
            return out
        return call

    torch.nn.SyncBatchNorm.forward = modelled_sync_batch_norm
    DistributedDataParallel._passing_sync_batchnorm_handle = lambda self, module: None
    utils.training.setup.sync_batchnorm = lambda model, device: torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    sys.argv = [script, *args]
    with patched_collectives(record):
        try:
            runpy.run_path(script, run_name="__main__")
        finally:
            log.close()


if __name__ == "__main__":
    main()
