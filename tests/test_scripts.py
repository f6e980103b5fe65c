"""Every launcher passes extra arguments through ("$@" last): run each for a few iterations on small data."""
import glob
import os

import pytest

from conftest import ROOT, TINY, run_script
from utils.checkpoint import load_checkpoint

LAUNCHERS = sorted(os.path.basename(p) for pattern in ("ma*.sh", "tutorial_*.sh", "shortrun_*.sh")
                   for p in glob.glob(os.path.join(ROOT, "scripts", pattern)))


def test_all_recipes_have_launchers():
    assert {"maebm_cifar10.sh", "majem_cifar10.sh", "maebm_celeba.sh", "maebm_fashionmnist.sh",
            "majem_fashionmnist.sh", "majem_mnist.sh", "tutorial_mnist.sh", "shortrun_fashionmnist.sh"} <= set(LAUNCHERS)


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_launcher_runs_with_overrides(launcher, tmp_path, fmnist_root, fmnist_centers):
    save = tmp_path / "run"
    run_script(f"scripts/{launcher}", "--dataset", "fashionmnist", "--data_root", fmnist_root, "--center_dir",
               fmnist_centers, *TINY, "--max_iters", "2", "--n_steps", "1", "--n_valid", "0", "--save_dir", save,
               check=True)
    ckpt = load_checkpoint(str(save / "last_ckpt.pt"))
    assert ckpt["iteration"] == 2 and ckpt["args"]["dataset"] == "fashionmnist" and ckpt["args"]["model"] == "cnn"
    recipe = open(os.path.join(ROOT, "scripts", launcher)).read()
    assert ckpt["args"]["uncond"] == ("--uncond" in recipe)
