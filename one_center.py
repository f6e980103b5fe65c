"""Fit the Gaussian (mean, covariance) of the training images in [-1,1] that M-EBM starts its chains from.

Writes {dataset}_mean_one.pt and {dataset}_cov_one.pt (upstream names) into --save_dir, and with
--per_class also {dataset}_mean_class.pt / {dataset}_cov_class.pt (one Gaussian per class).
"""
import os
import sys
import time

import torch

from utils.checkpoint import atomic_torch_save
from utils.data import DATASETS, add_download_flag, dataset_info, dataset_labels, image_transform, load_dataset
from utils.errors import ArgumentParser, UserError, positive_int, run_cli
from utils.gaussian import center_paths, fit_gaussian_center, fit_size
from utils.progress import progress


def build_parser():
    p = ArgumentParser("one_center.py", description=__doc__.split("\n")[0],
                       example="python one_center.py --dataset cifar10 --data_root ./data --save_dir ./data/centers")
    p.add_argument("--dataset", default="fashionmnist", choices=list(DATASETS), help="training images to fit")
    p.add_argument("--data_root", default="./data", help="dataset root, as train_maebm.py's")
    add_download_flag(p)
    p.add_argument("--save_dir", default=".", help="where to write the .pt files (train_maebm.py --center_dir)")
    p.add_argument("--per_class", action="store_true", help="also fit one Gaussian per class")
    p.add_argument("--batch_size", type=positive_int, default=1000, help="images read at a time")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    ch, size, _ = dataset_info(args.dataset)
    ds = load_dataset(args.dataset, args.data_root, True, image_transform(args.dataset, False), args.download)
    n_classes = int(dataset_labels(ds).max()) + 1 if args.per_class else 0
    try:
        os.makedirs(args.save_dir, exist_ok=True)
    except OSError as e:
        raise UserError(f"--save_dir: cannot create {args.save_dir} ({e.strerror})") from None
    if not os.access(args.save_dir, os.W_OK):
        raise UserError(f"--save_dir: {args.save_dir} is not writable")
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=False)
    start = time.time()
    moments = fit_gaussian_center(progress(loader, desc="fitting", leave=False), n_classes)
    mean, cov = moments.global_moments()
    outputs = [(center_paths(args.save_dir, args.dataset), mean, cov)]
    if args.per_class:
        outputs.append((center_paths(args.save_dir, args.dataset, per_class=True), *moments.class_moments()))
    for (mean_path, cov_path), m, c in outputs:
        atomic_torch_save(m.float(), mean_path)
        atomic_torch_save(c.float(), cov_path)
        print(f"wrote {mean_path} {tuple(m.shape)} and {cov_path} {tuple(c.shape)}")
    s = fit_size(size)
    print(f"{moments.count} images of {ch}x{size}x{size} (fitted at {ch}x{s}x{s}) in {time.time() - start:.1f}s; "
          f"mean pixel {mean.mean():.4f}, mean pixel variance {cov.diagonal().mean():.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
