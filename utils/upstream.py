"""Checkpoints written by the upstream M-EBM code: {"model_state_dict", "replay_buffer"} of its F/CCF models."""
import re

from utils.errors import UserError

_BLOCK = re.compile(r"^f\.layer(\d)\.(\d+)\.(.*)$")


def is_upstream_checkpoint(ckpt):
    """Upstream's dict holds the model and buffer only; this tool's also records its flags (args_json)."""
    return isinstance(ckpt, dict) and "model_state_dict" in ckpt and "args_json" not in ckpt


def _strip_data_parallel(state):
    # upstream saves f.state_dict() of an nn.DataParallel when --gpu-id lists several GPUs
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def upstream_architecture(state):
    """(depth, width, in_channels, n_classes, has_fourth_stage) read off upstream's WRN weights."""
    state = _strip_data_parallel(state)
    blocks = {int(m.group(2)) for m in map(_BLOCK.match, state) if m and m.group(1) == "1"}
    if "f.conv1.weight" not in state or "class_output.weight" not in state or not blocks:
        raise UserError("the checkpoint's model_state_dict is not upstream's Wide-ResNet (no f.conv1 / f.layer1 / "
                        "class_output weights)")
    n = max(blocks) + 1
    width = state["f.layer1.0.conv1.weight"].shape[0] // 16
    fourth = any(k.startswith("f.layer4.") for k in state)
    return 6 * n + 4, width, state["f.conv1.weight"].shape[1], state["class_output.weight"].shape[0], fourth


def from_upstream_state_dict(state, uncond):
    """Rename upstream's keys to this project's EnergyModel: f.layer{s}.{j} -> f.layers.{(s-1)n+j},
    shortcut.0 -> shortcut; the energy head upstream's CCF carries unused is dropped unless `uncond`."""
    state = _strip_data_parallel(state)
    depth = upstream_architecture(state)[0]
    n = (depth - 4) // 6
    out = {}
    for key, value in state.items():
        if key.startswith("energy_output.") and not uncond:
            continue
        m = _BLOCK.match(key)
        if m:
            stage, block, rest = int(m.group(1)), int(m.group(2)), m.group(3)
            key = f"f.layers.{(stage - 1) * n + block}.{rest.replace('shortcut.0.', 'shortcut.')}"
        out[key] = value
    return out


def adopt_upstream_checkpoint(ckpt, arch, path):
    """An upstream checkpoint with this project's key names and `arch` (from the flags) recorded, after checking
    that its weights are the Wide-ResNet those flags describe."""
    depth, width, in_channels, n_classes, fourth = upstream_architecture(ckpt["model_state_dict"])
    found = {"model": "wrn", "depth": depth, "width": width, "in_channels": in_channels, "n_classes": n_classes}
    diff = [f"{k}={v!r} in the checkpoint vs {arch[k]!r} in the flags" for k, v in found.items() if arch[k] != v]
    if fourth != (arch["image_size"] >= 64):
        diff.append(f"{'a' if fourth else 'no'} fourth WRN stage in the checkpoint vs {arch['image_size']}-pixel "
                    f"{arch['dataset']} in the flags")
    if diff:
        raise UserError(f"upstream checkpoint {path} does not match the flags: " + "; ".join(diff))
    return {**ckpt, "model_state_dict": from_upstream_state_dict(ckpt["model_state_dict"], arch["uncond"]),
            "arch": dict(arch)}
