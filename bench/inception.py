"""Inception throughput (images/s) and the FID of two fixed image sets for each precision and memory layout, on
the machine it runs on. The sets: the first N Fashion-MNIST training images against the first N test images (a
real-data floor), and the test images against themselves with N(0, 40/255) pixel noise.

    python bench/inception.py --data_root ./data --n 2000      # the README's CPU figures
    python bench/inception.py --device cuda                    # adds tf32 on a GPU
"""
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils.data import image_transform, load_dataset  # noqa: E402
from utils.fid import PRECISIONS, InceptionFeatures, extract, feature_stats, find_inception_weights, frechet_distance  # noqa: E402
from utils.errors import ArgumentParser, UserError, fid_images, positive_int, run_cli  # noqa: E402


def parse(argv=None):
    p = ArgumentParser("bench/inception.py", description=__doc__.split("\n")[0],
                       example="python bench/inception.py --data_root ./data --n 200 --out experiment/inception_bench")
    p.add_argument("--data_root", default="./data")
    p.add_argument("--n", type=fid_images, default=2000, help="images per set")
    p.add_argument("--batch_size", type=positive_int, default=100)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS),
                   help="tf32 runs only on CUDA")
    p.add_argument("--layouts", nargs="+", default=["channels_last", "contiguous"], choices=["channels_last", "contiguous"])
    p.add_argument("--out", default="bench/inception.json")
    a = p.parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible")
    return a


def image_sets(a):
    load = lambda train: load_dataset("fashionmnist", a.data_root, train, image_transform("fashionmnist", False))
    first = lambda ds: torch.stack([ds[i][0] for i in range(min(a.n, len(ds)))])
    train, test = first(load(True)), first(load(False))
    noisy = (test + torch.randn(test.shape, generator=torch.Generator().manual_seed(0)) * 2 * 40 / 255).clamp(-1, 1)
    return {"train_vs_test": (train, test), "test_vs_noisy_test": (test, noisy)}


def main(argv=None):
    a = parse(argv)
    device = torch.device(a.device)
    state, source, has_logits = find_inception_weights()
    sets = image_sets(a)
    variants = [(p, f) for p in a.precisions for f in a.layouts if p != "tf32" or device.type == "cuda"]
    rows = []
    for precision, layout in variants:
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        net = InceptionFeatures(state, False, precision, fmt).to(device)
        row, seconds, images = {"precision": precision, "layout": layout}, 0.0, 0
        for name, (x, y) in sets.items():
            start = time.perf_counter()
            fx, _ = extract(net, x, a.batch_size, device, desc=f"{precision} {layout} {name}")
            fy, _ = extract(net, y, a.batch_size, device, desc=f"{precision} {layout} {name}")
            seconds, images = seconds + time.perf_counter() - start, images + len(x) + len(y)
            row[f"fid_{name}"] = frechet_distance(feature_stats(fx), feature_stats(fy))
        row["images_per_s"] = images / seconds
        rows.append(row)
        print(f"{precision:<6}{layout:<14}{row['images_per_s']:>8.1f} images/s   FID train vs test "
              f"{row['fid_train_vs_test']:.3f}   test vs noisy test {row['fid_test_vs_noisy_test']:.3f}", flush=True)
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "torch": torch.__version__,
            "threads": torch.get_num_threads(), "n": a.n, "weights": source, "rows": rows}
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as fh:
        json.dump(info, fh, indent=2)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
