"""The precision policy: which parts of training and sampling run in bf16, decided once from the flags and used by
training, evaluation and the benchmarks.

Parts: the loss's forward and backward (--amp); the sampler's forward and input-gradient backward (--amp_sampler);
the memory layout (--channels_last). Whatever the policy, the energy and class heads run in fp32 on fp32 features
(models/energy.py), so energies, every loss term, logged values and Metropolis tests are fp32, and chain starts are
drawn outside autocast (fp32).
"""
import contextlib
from dataclasses import dataclass

import torch

def cpu_has_amx():
    """Whether this CPU has AMX bf16 tiles (Linux /proc/cpuinfo flag), where bf16 convolutions pay on a CPU."""
    try:
        with open("/proc/cpuinfo") as fh:
            return any(line.startswith("flags") and "amx_bf16" in line.split() for line in fh)
    except OSError:
        return False


@dataclass(frozen=True)
class PrecisionPolicy:
    device_type: str
    loss_bf16: bool  # the loss's forwards (data, samples, labelled batch) and their backward
    sampler_bf16: bool  # the chains' forward and input-gradient backward
    channels_last: bool

    @property
    def memory_format(self):
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def _autocast(self, on):
        return torch.autocast(self.device_type, dtype=torch.bfloat16) if on else contextlib.nullcontext()

    def loss_autocast(self):
        return self._autocast(self.loss_bf16)

    def sampler_autocast(self):
        return self._autocast(self.sampler_bf16)

    def layout(self, x):
        return x if x is None else x.contiguous(memory_format=self.memory_format)

    def describe(self):
        part = lambda on: "bf16" if on else "fp32"
        return (f"loss {part(self.loss_bf16)}, sampler {part(self.sampler_bf16)}, heads/energies fp32, "
                f"channels_last {'on' if self.channels_last else 'off'}")

    def record(self):
        """What args.json and checkpoints store, so evaluation samples as training did."""
        return {"loss": "bf16" if self.loss_bf16 else "fp32", "sampler": "bf16" if self.sampler_bf16 else "fp32",
                "channels_last": self.channels_last}


def precision_policy(amp, amp_sampler, channels_last, device):
    """The policy of --amp / --channels_last (on, off, or auto: on with CUDA and on CPUs with AMX) and --amp_sampler
    (on / off) on `device`."""
    device = torch.device(device)
    fast_hardware = device.type == "cuda" or (device.type == "cpu" and cpu_has_amx())
    switch = lambda value: value == "on" or (value == "auto" and fast_hardware)
    return PrecisionPolicy(device.type, switch(amp), amp_sampler == "on", switch(channels_last))


def compile_wanted(flag, device):
    """--compile on / off, or auto: on with CUDA."""
    return flag == "on" or (flag == "auto" and torch.device(device).type == "cuda")


def recorded_policy(train_args, device, sampler_override=None):
    """The policy a checkpoint's run trained with, its sampler part replaced by `sampler_override` ("fp32" / "bf16")
    when given. Runs from before the policy was recorded ran everything under --amp on in bf16, else fp32."""
    legacy = "bf16" if train_args.get("amp") == "on" else "fp32"
    record = train_args.get("precision") or {"loss": legacy, "sampler": legacy,
                                             "channels_last": train_args.get("channels_last") == "on"}
    sampler = sampler_override or record.get("sampler", "fp32")
    return PrecisionPolicy(torch.device(device).type, record.get("loss") == "bf16", sampler == "bf16",
                           bool(record.get("channels_last", False)))
