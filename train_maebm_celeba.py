"""Upstream's CelebA entry point: train_maebm.py on p(x) alone, with the defaults of upstream's
train_maebm_celeba.py (--dataset celeba128, 250 epochs, decay at 120/150/180/210/240, print every 1000).

Published command: bash scripts/maebm_celeba.sh (images in DATA_ROOT/train/<folder>/<images>).
"""
import sys

import train_maebm
from utils.errors import run_cli


def build_parser():
    p = train_maebm.build_parser()
    p.prog, p.description = "train_maebm_celeba.py", __doc__.split("\n")[0]
    p.epilog = "example:\n  python train_maebm_celeba.py --data_root DATA --center_dir ./data/centers"
    p.set_defaults(dataset="celeba128", pyx=0.0, n_epochs=250, decay_epochs=[120, 150, 180, 210, 240], print_every=1000)
    return p


def main(argv=None):
    return train_maebm.main(argv, build_parser())


if __name__ == "__main__":
    sys.exit(run_cli(main))
