"""Which device a script runs on: one decision for training, evaluation and the benchmarks."""
import torch

from utils.errors import UserError


def wants_cuda(device_flag):
    """--device auto|cpu|cuda: whether to run on CUDA (auto: when one is available)."""
    if device_flag == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    return device_flag == "cuda" or (device_flag == "auto" and torch.cuda.is_available())


def select_device(device_flag, gpu_id="", local_rank=None):
    """CPU, or the CUDA device: under torchrun the rank's LOCAL_RANK one, else the first of --gpu-id."""
    if not wants_cuda(device_flag):
        return torch.device("cpu")
    if local_rank is not None:
        return torch.device(f"cuda:{local_rank}")
    return torch.device(f"cuda:{int(gpu_id.split(',')[0] or 0)}")


def use_cudnn_autotuner(device):
    """cuDNN's autotuner on CUDA, where every iteration has the same shapes (chosen once, then reused); returns
    whether it is on, for args.json."""
    on = torch.device(device).type == "cuda"
    if on:
        torch.backends.cudnn.benchmark = True
    return on
