"""FID/KID of the samples in .npz files (key 'samples', images in [-1, 1]) against a dataset's training images, with
the project's FidScorer: for samples made where the Inception weights are not (bench/gpu_check.py's samples_*.npz).

    python bench/fid_of_samples.py OUT/samples_fp32.npz OUT/samples_fast.npz --dataset fashionmnist --fid_ref_n 2000
"""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils.data import DATASETS, image_transform, load_dataset  # noqa: E402
from utils.fid import FidScorer  # noqa: E402
from utils.errors import ArgumentParser  # noqa: E402


def main(argv=None):
    p = ArgumentParser("bench/fid_of_samples.py", description=__doc__.split("\n")[0],
                       example="python bench/fid_of_samples.py OUT/samples_fp32.npz --fid_ref_n 2000")
    p.add_argument("samples", nargs="+", help=".npz files with an array 'samples'")
    p.add_argument("--dataset", default="fashionmnist", choices=list(DATASETS))
    p.add_argument("--data_root", default="./data")
    p.add_argument("--fid_ref_n", type=int, default=2000, help="training images of the reference (0: all)")
    p.add_argument("--fid_stats_dir", default=None, help="default: <data_root>/fid_stats")
    a = p.parse_args(argv)
    reference = load_dataset(a.dataset, a.data_root, True, image_transform(a.dataset, False))
    scorer = FidScorer(reference, a.fid_stats_dir or os.path.join(a.data_root, "fid_stats"), a.dataset, "cpu",
                       n_ref=a.fid_ref_n)
    for path in a.samples:
        x = torch.from_numpy(np.load(path)["samples"].astype(np.float32))
        result = scorer.score(x)
        print(f"{path}: FID {result['fid']:.2f}, KID {result['kid_mean']:.4f} +- {result['kid_std']:.4f} "
              f"({len(x)} samples vs {a.fid_ref_n or 'all'} training images; {result['convention']})")
        print(json.dumps({k: v for k, v in result.items() if isinstance(v, (int, float))}))


if __name__ == "__main__":
    main()
