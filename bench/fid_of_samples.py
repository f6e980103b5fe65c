"""FID/KID of the samples in .npz files (key 'samples', images in [-1, 1]) against a dataset's training images, with
the project's FidScorer: for samples made where the Inception weights are not (bench/gpu_check.py's samples_*.npz).

    python bench/fid_of_samples.py OUT/samples_fp32.npz OUT/samples_fast.npz --dataset fashionmnist --fid_ref_n 2000
"""
import json
import os
import sys
import zipfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils.data import DATASETS, dataset_info, image_transform, load_dataset  # noqa: E402
from utils.fid import MIN_IMAGES, FidScorer  # noqa: E402
from utils.errors import ArgumentParser, UserError, fid_images_or_zero, run_cli  # noqa: E402


def read_samples(path, info):
    """The float32 images of an .npz file's array 'samples' (N x C x H x W in [-1, 1]), or one line on what is wrong."""
    channels, size, _ = info
    try:
        with np.load(path) as z:
            if "samples" not in z.files:
                raise UserError(f"{path}: no array 'samples' (it holds {', '.join(z.files) or 'nothing'})")
            x = z["samples"]
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        if isinstance(e, FileNotFoundError):
            raise UserError(f"{path}: not found") from None
        raise UserError(f"{path}: not a readable .npz file ({type(e).__name__})") from None
    if x.ndim != 4 or tuple(x.shape[1:]) != (channels, size, size) or len(x) < MIN_IMAGES:
        raise UserError(f"{path}: 'samples' has shape {tuple(x.shape)}, expected (N >= {MIN_IMAGES}, {channels}, {size}, "
                        f"{size}) for --dataset")
    x = torch.from_numpy(x.astype(np.float32))
    if not torch.isfinite(x).all():
        raise UserError(f"{path}: 'samples' holds NaN or infinite values")
    return x


def main(argv=None):
    p = ArgumentParser("bench/fid_of_samples.py", description=__doc__.split("\n")[0],
                       example="python bench/fid_of_samples.py OUT/samples_fp32.npz --fid_ref_n 2000")
    p.add_argument("samples", nargs="+", help=".npz files with an array 'samples'")
    p.add_argument("--dataset", default="fashionmnist", choices=list(DATASETS))
    p.add_argument("--data_root", default="./data")
    p.add_argument("--fid_ref_n", type=fid_images_or_zero, default=2000, help="training images of the reference (0: all)")
    p.add_argument("--fid_stats_dir", default=None, help="default: <data_root>/fid_stats")
    a = p.parse_args(argv)
    images = {path: read_samples(path, dataset_info(a.dataset)) for path in a.samples}  # all checked before scoring
    reference = load_dataset(a.dataset, a.data_root, True, image_transform(a.dataset, False))
    scorer = FidScorer(reference, a.fid_stats_dir or os.path.join(a.data_root, "fid_stats"), a.dataset, "cpu",
                       n_ref=a.fid_ref_n)
    for path, x in images.items():
        result = scorer.score(x)
        print(f"{path}: FID {result['fid']:.2f}, KID {result['kid_mean']:.4f} +- {result['kid_std']:.4f} "
              f"({len(x)} samples vs {a.fid_ref_n or 'all'} training images; {result['convention']})")
        print(json.dumps({k: v for k, v in result.items() if isinstance(v, (int, float))}))


if __name__ == "__main__":
    sys.exit(run_cli(main))
