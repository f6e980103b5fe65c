"""torch.distributed helpers for torchrun runs: rank info and the few collectives the trainer needs."""
import contextlib
from dataclasses import dataclass
import os

import torch
import torch.distributed as dist

from utils.errors import UserError


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self):
        return self.world > 1

    @property
    def is_main(self):
        return self.rank == 0


# torch.distributed's calls that every rank must enter, in the same order (DistributedDataParallel's buffer
# broadcast and SyncBatchNorm's all-gather go through these too)
COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "all_gather_object", "broadcast",
               "broadcast_object_list", "barrier", "gather", "gather_object", "scatter", "reduce",
               "reduce_scatter_tensor", "all_to_all", "_broadcast_coalesced")


@contextlib.contextmanager
def patched_collectives(wrap):
    """Inside the block, each torch.distributed collective `name` is replaced by wrap(name, original)."""
    originals = {name: getattr(dist, name) for name in COLLECTIVES if hasattr(dist, name)}
    for name, fn in originals.items():
        setattr(dist, name, wrap(name, fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(dist, name, fn)


@contextlib.contextmanager
def main_only(info, what):
    """A block that rank 0 runs alone (grids, probes, files): a collective inside it, which no other rank joins,
    raises at once instead of hanging the run (for instance SyncBatchNorm's all-gather of a model in train mode)."""
    if not info.enabled:
        yield
        return

    def refuse(name, _):
        def call(*args, **kwargs):
            raise RuntimeError(f"{what}: torch.distributed.{name} on rank 0 alone would wait forever for the other "
                               "ranks; run it on every rank, or with no collective (eval mode, no SyncBatchNorm)")
        return call
    with patched_collectives(refuse):
        yield


def init_distributed(use_cuda):
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): NCCL on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if use_cuda:
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return info


def gather_cat(tensor, info):
    """Every rank's tensor concatenated along dim 0 (same shape on all ranks), on every rank."""
    if not info.enabled:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(info.world)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def gather_objects(obj, info):
    if not info.enabled:
        return [obj]
    out = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, info):
    """rank 0's `obj` on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def max_over_ranks(value, info):
    """The element-wise maximum of an integer tensor over the ranks (an all-reduce, no host sync)."""
    if not info.enabled:
        return value
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return value


def any_rank(flag, info):
    """A boolean tensor that is true when it is true on any rank (no host sync)."""
    return max_over_ranks(flag.to(torch.int32), info).bool()


def on_main(fn, info):
    """Run fn on rank 0; a UserError there is raised on every rank, so no rank waits forever."""
    error = None
    if info.is_main:
        try:
            with main_only(info, "a step rank 0 runs alone"):
                fn()
        except UserError as e:
            error = str(e)
    error = broadcast_object(error, info)
    if error is not None:
        raise UserError(error)


def max_parameter_difference(model, info):
    """Largest |parameter difference| between any rank and rank 0 (0.0 when in sync)."""
    flat = torch.cat([p.detach().float().flatten() for p in model.parameters()])
    if not info.enabled:
        return 0.0
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    diff = (flat - reference).abs().max()
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff)


def barrier(info):
    if info.enabled:
        dist.barrier()


def shutdown(info):
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
