"""Our FID equals pytorch-fid's own CLI, with the offline weights placed where pytorch-fid looks for them."""
import os
import re
import subprocess
import sys
import urllib.error

from PIL import Image
import numpy as np
import pytest
from pytorch_fid.inception import FID_WEIGHTS_URL
import torch

import utils.fid as fid
from utils.errors import UserError
from utils.offline import OFFLINE_ENV
from utils.fid import (PYTORCH_FID_FILE, _fid_helper_path, convert_fid_helper_weights, extract, feature_stats,
                       frechet_distance, kernel_inception_distance, load_inception)

pytestmark = pytest.mark.usefixtures("fid_weights")


def smooth_images(n, seed):
    """Blurry colour blobs: natural-ish statistics so that Inception features are not degenerate."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 1, size=(n, 3, 4, 4))
    x = torch.nn.functional.interpolate(torch.tensor(small), size=32, mode="bicubic", align_corners=False)
    return x.clamp(0, 1).float()


def write_pngs(folder, x01):
    os.makedirs(folder, exist_ok=True)
    for i, img in enumerate((x01 * 255).round().byte().permute(0, 2, 3, 1).numpy()):
        Image.fromarray(img).save(os.path.join(folder, f"{i:04d}.png"))


def read_pngs(folder):
    names = sorted(os.listdir(folder))
    arr = np.stack([np.asarray(Image.open(os.path.join(folder, n)).convert("RGB")) for n in names])
    return torch.tensor(arr).permute(0, 3, 1, 2).float() / 255 * 2 - 1


@pytest.fixture(scope="module")
def inception(tmp_path_factory):
    model, source = load_inception(cache_dir=str(tmp_path_factory.mktemp("fidcache")))
    return model


def test_fid_matches_pytorch_fid_cli(tmp_path, inception):
    hub = tmp_path / "torch_home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    state = convert_fid_helper_weights(_fid_helper_path())
    # pytorch-fid loads its checkpoint strictly, fc included; pool3 features never touch fc, so zeros do.
    state["fc.weight"], state["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)
    torch.save(state, hub / PYTORCH_FID_FILE)
    write_pngs(tmp_path / "a", smooth_images(16, 0))
    write_pngs(tmp_path / "b", (smooth_images(16, 1) * 0.7 + 0.2))
    proc = subprocess.run([sys.executable, "-m", "pytorch_fid", str(tmp_path / "a"), str(tmp_path / "b"), "--device",
                           "cpu", "--batch-size", "16", "--num-workers", "0"], capture_output=True, text=True,
                          env={**os.environ, "TORCH_HOME": str(tmp_path / "torch_home")}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    theirs = float(re.search(r"FID:\s+([0-9.eE+-]+)", proc.stdout).group(1))
    fa, _ = extract(inception, read_pngs(tmp_path / "a"), batch_size=16)
    fb, _ = extract(inception, read_pngs(tmp_path / "b"), batch_size=16)
    ours = frechet_distance(feature_stats(fa), feature_stats(fb))
    assert theirs > 1
    assert ours == pytest.approx(theirs, abs=1e-3)


@pytest.mark.parametrize("n", [50, 2000])  # fewer samples than features (rank-deficient covariances), and more
def test_frechet_distance_equals_pytorch_fids_routine(n):
    from pytorch_fid.fid_score import calculate_frechet_distance
    rng = np.random.default_rng(n)
    a, b = rng.standard_normal((n, 512)) ** 2, rng.standard_normal((n, 512)) ** 2 * 1.2 + 0.1
    stats_a, stats_b = feature_stats(a), feature_stats(b)
    theirs = calculate_frechet_distance(*stats_a, *stats_b)
    assert frechet_distance(stats_a, stats_b) == pytest.approx(theirs, rel=1e-7)


def test_fid_is_zero_on_itself_and_grows_with_noise(inception):
    x = smooth_images(20, 2) * 2 - 1
    base, _ = extract(inception, x, batch_size=20)
    assert abs(frechet_distance(feature_stats(base), feature_stats(base))) < 1e-3
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=g)
    fids = []
    for level in (0.05, 0.2, 0.5):
        f, _ = extract(inception, (x + level * noise).clamp(-1, 1), batch_size=20)
        fids.append(frechet_distance(feature_stats(base), feature_stats(f)))
    assert 0 < fids[0] < fids[1] < fids[2]
    kid_self, _ = kernel_inception_distance(base, base, n_subsets=5, subset_size=20)
    kid_noisy, _ = kernel_inception_distance(base, f, n_subsets=5, subset_size=20)
    assert kid_self < kid_noisy


def test_converted_weights_give_fid_helpers_own_features(inception):
    """The conversion checked against the TorchScript network it was read from, not only against itself."""
    jit = torch.jit.load(_fid_helper_path(), map_location="cpu").eval()
    x = smooth_images(4, 3)
    x = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
    ours, _ = inception(x)
    with torch.no_grad():
        theirs = jit(x)
    assert theirs.shape == (4, 2048) and ours.abs().mean() > 0.05
    assert torch.allclose(ours, theirs, atol=2e-4, rtol=1e-4)


def test_pytorch_fid_download_first_then_the_offline_weights(monkeypatch, tmp_path):
    """The online branch with pytorch-fid's loader patched in-process: no network is touched."""
    monkeypatch.delenv(OFFLINE_ENV)
    monkeypatch.setattr(fid, "torch_hub_checkpoints", lambda: str(tmp_path / "hub"))
    full = convert_fid_helper_weights(_fid_helper_path())
    full["fc.weight"], full["fc.bias"] = torch.randn(1008, 2048), torch.zeros(1008)
    urls = []
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda url, **kw: urls.append(url) or full)
    state, source, has_logits = fid.find_inception_weights(cache_dir=str(tmp_path / "cache"))
    assert urls == [FID_WEIGHTS_URL] and has_logits and "downloaded by pytorch-fid's URL" in source

    def no_network(url, **kw):
        raise urllib.error.URLError("Name or service not known")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    state, source, has_logits = fid.find_inception_weights(cache_dir=str(tmp_path / "cache"))
    assert not has_logits and "could not be downloaded (URLError" in source and "default_1.pt" in source
    assert set(state) == {k for k in full if not k.startswith("fc.")}


def test_bf16_inception_is_close_and_says_approximate(inception):
    x = smooth_images(8, 5) * 2 - 1
    exact, _ = inception(x)
    fast, _ = fid.InceptionFeatures(inception.net.state_dict(), has_logits=False, precision="bf16")(x)
    assert fast.dtype == torch.float32 and (fast - exact).norm() / exact.norm() < 0.05 and not torch.equal(fast, exact)
    assert fid.PRECISIONS["bf16"].startswith("approximate") and not fid.PRECISIONS["exact"].startswith("approximate")


def test_exact_inception_turns_cudnn_tf32_off_on_cuda():
    """PyTorch leaves cuDNN's TF32 on by default: exact features on CUDA must turn it off, tf32 on."""
    from types import SimpleNamespace
    precision = lambda name, device: fid.InceptionFeatures._precision(SimpleNamespace(precision=name), device)
    assert torch.backends.cudnn.allow_tf32  # PyTorch's default, which the exact path must not inherit
    with precision("exact", torch.device("cuda")):
        assert not torch.backends.cudnn.allow_tf32
    with precision("tf32", torch.device("cuda")):
        assert torch.backends.cudnn.allow_tf32
    with precision("exact", torch.device("cpu")):
        assert torch.backends.cudnn.allow_tf32  # nothing to change on the CPU
    assert torch.backends.cudnn.allow_tf32


class LabelledImages(torch.utils.data.Dataset):
    """Constant images whose value is their label, with torchvision's `targets`."""

    def __init__(self, labels):
        self.targets = list(labels)

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return torch.full((1, 2, 2), float(self.targets[i])), self.targets[i]


def label_features(rng):
    """A stand-in for Inception: features centred on the image's value, so a feature row says its image's label."""
    def features(inception, images, batch_size=100, device="cpu", desc=""):
        batches = images if isinstance(images, torch.utils.data.DataLoader) else [(images,)]
        x = torch.cat([b[0] for b in batches]).flatten(1)[:, :1].double().numpy()
        return x * 10 + rng.normal(size=(len(x), 8)), None
    return features


def test_per_class_scores_compare_each_class_with_its_own_reference(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    monkeypatch.setattr(fid, "extract", label_features(rng))
    monkeypatch.setattr(fid.FidScorer, "inception", lambda self: None)
    reference = torch.utils.data.Subset(LabelledImages(rng.integers(0, 3, 400)), list(range(50, 350)))
    scorer = fid.FidScorer(reference, str(tmp_path), "toy", "cpu", n_ref=200, seed=3)
    (_, _), feats = scorer.reference()
    assert np.array_equal(np.rint(feats[:, 0] / 10), scorer.reference_labels())  # labels in the kept order
    # class 0 drawn like its reference, class 1 like class 2's images, class 2 too few to score
    samples = torch.cat([torch.zeros(60, 1, 2, 2), torch.full((60, 1, 2, 2), 2.0), torch.full((5, 1, 2, 2), 2.0)])
    classes = np.array([0] * 60 + [1] * 60 + [2] * 5)
    result = scorer.score(samples, classes)["per_class"]
    assert [result[c]["n"] for c in range(3)] == [60, 60, 5]
    assert result[0]["fid"] < 5 < 50 < result[1]["fid"] and result[0]["kid"] < 0.05 < result[1]["kid"]
    assert result[2]["fid"] is None and result[2]["kid"] is None


def test_fid_of_fewer_than_two_images_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(fid.FidScorer, "inception", lambda self: pytest.fail("no Inception for a refused count"))
    reference = LabelledImages(np.zeros(10, dtype=int))
    with pytest.raises(UserError, match="FID reference: 1 train image"):
        fid.FidScorer(reference, str(tmp_path), "toy", "cpu", n_ref=1)
    with pytest.raises(UserError, match="FID reference: 1 train image"):
        fid.FidScorer(torch.utils.data.Subset(reference, [3]), str(tmp_path), "toy", "cpu")
    scorer = fid.FidScorer(reference, str(tmp_path), "toy", "cpu", n_ref=2)
    with pytest.raises(UserError, match="FID of 1 image"):
        scorer.score(torch.zeros(1, 1, 2, 2))
    assert not os.listdir(tmp_path)  # nothing computed or cached
