"""--compile: the feature extractor compiled for chains, loss forwards, classify() and the --ema average; no
recompilation after warm-up; chains without weight-gradient work; fp32 energies under bf16 autocast. The backend
is AOTAutograd with counting compilers (the graphs inductor would get, without generating code)."""
import pytest
import torch
from functorch.compile import make_boxed_func
from torch._dynamo.backends.common import aot_autograd

import models.energy
from conftest import TINY, run_script
from models import build_model
from models.energy import compile_backbone
from test_training_pieces import make_parts
from utils.training import state as state_module
from utils.training.step import train_step


def output_grads(gm):
    """How many gradients a backward graph returns (None outputs excluded)."""
    out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    return sum(a is not None for a in (out if isinstance(out, (list, tuple)) else [out]))


@pytest.fixture
def compiles(monkeypatch):
    """[(kind, graph), ...] of every graph compiled from here on."""
    torch._dynamo.reset()
    seen = []

    def compiler(kind):
        def compile_graph(gm, example_inputs):
            seen.append((kind, gm))
            return make_boxed_func(gm.forward)
        return compile_graph
    monkeypatch.setattr(models.energy, "COMPILE_BACKEND",
                        aot_autograd(fw_compiler=compiler("forward"), bw_compiler=compiler("backward")))
    yield seen
    torch._dynamo.reset()


def test_no_recompilation_after_warm_up_over_epochs_with_checkpoints_evaluation_and_lr_changes(
        compiles, monkeypatch, tmp_path, fmnist_root, fmnist_centers):
    advanced = []
    original = state_module.TrainState.advance
    monkeypatch.setattr(state_module.TrainState, "advance",
                        lambda self, n: advanced.append(len(compiles)) or original(self, n))
    # 3 epochs of 2 iterations (64 labelled images after 256 held out), evaluated and checkpointed at each end,
    # the lr decayed at epochs 1 and 2, with the average
    run_script("train_maebm.py", "--data_root", fmnist_root, "--center_dir", fmnist_centers, "--save_dir",
               tmp_path / "run", *TINY, "--n_valid", "256", "--n_epochs", "3", "--ckpt_every", "1", "--ema", "0.9",
               "--decay_epochs", "1", "2", "--compile", "--novis", check=True)
    assert len(advanced) == 6
    warm = advanced[2]  # graphs compiled by the end of the first iteration after epoch 0's evaluation and checkpoint
    assert warm > 0 and len(compiles) == warm, [k for k, _ in compiles[warm:]]
    grads = sorted(output_grads(g) for k, g in compiles if k == "backward")
    assert grads[0] == 1  # the chains' backward returns the input gradient alone: no weight-gradient work


def test_chains_run_with_frozen_weights_and_training_gets_its_gradients(tmp_path, monkeypatch):
    parts, _, guard, _ = make_parts(tmp_path)
    seen = []
    import utils.training.step as step
    real = step.run_sampler
    monkeypatch.setattr(step, "run_sampler", lambda *a, **k: seen.append(
        [p.requires_grad for p in parts.model.parameters()]) or real(*a, **k))
    train_step(parts, 0, 1e-3, False, guard)
    assert seen and not any(seen[0])
    assert all(p.requires_grad and p.grad is not None for p in parts.model.parameters())


def test_compiled_energies_stay_fp32_under_bf16_autocast(compiles):
    model = compile_backbone(build_model("cnn", 10, 1, width=1, image_size=28, uncond=True))
    x = torch.rand(8, 1, 28, 28, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        clf = model.classify(x)
        assert compiles  # classify() alone runs compiled: the labelled batch's forward and backward
        f, logits = model(x)
    assert f.dtype == logits.dtype == clf.dtype == torch.float32
    grad, = torch.autograd.grad(f.sum(), x)
    assert grad.dtype == torch.float32 and torch.isfinite(grad).all()
    assert {k for k, _ in compiles} == {"forward", "backward"}


def test_the_compiled_average_computes_with_its_own_weights(compiles, tmp_path):
    """The --ema copy is compiled after it is made: a deep copy of a compiled module would call the original's."""
    from utils.training.setup import build_training
    import train_maebm
    from utils.distributed import DistInfo
    args = train_maebm.build_parser().parse_args(
        ["--model", "cnn", "--width", "1", "--init", "u", "--save_dir", str(tmp_path / "run"), "--ema", "0.5",
         "--compile", "--dataset", "fashionmnist", "--data_root", str(tmp_path / "data"), "--buffer_size", "16",
         "--batch_size", "16", "--pyx_batch_size", "16"])
    from conftest import write_fashion_mnist
    write_fashion_mnist(str(tmp_path / "data"), n_train=64, n_test=16)
    parts, _, logger, _lock = build_training(args, 1, 28, (1, 28, 28), DistInfo())
    logger.close()
    with torch.no_grad():
        for p in parts.model.parameters():
            p.add_(1.0)  # the live model moves; the average does not
    x = torch.rand(4, 1, 28, 28)
    plain = build_model("cnn", 10, 1, width=1, image_size=28).eval()
    plain.load_state_dict(parts.ema.state_dict())
    before = len(compiles)
    with torch.no_grad():
        assert torch.allclose(parts.ema.model(x)[0], plain(x)[0], atol=1e-5)
    assert len(compiles) > before  # the average runs compiled (a deep copy of a compiled module is not)


def test_compile_on_the_cpu_without_a_cpp_compiler_is_a_clear_error(tmp_path, monkeypatch, fmnist_root, fmnist_centers):
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    proc = run_script("train_maebm.py", "--data_root", fmnist_root, "--center_dir", fmnist_centers, "--save_dir",
                      tmp_path / "run", *TINY, "--max_iters", "1", "--compile")
    line = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "--compile" in line and "C++ compiler" in line
    assert not (tmp_path / "run").exists()  # refused before the run directory is made
