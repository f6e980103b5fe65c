"""Where SGLD chains start (--init), one function shared by training, evaluation and benchmarks."""
import torch

from utils.gaussian import load_gaussian_start
from utils.sampling.buffer import uniform_start


def make_start_fn(args, image_shape, device, train_set):
    """start_fn(n, y=None) -> n images in [-1,1] for args.init: gm / gm_class (the fitted Gaussian, in
    args.center_dir), u (uniform), n (standard normal), data (a seeded random args.buffer_size of the training images,
    plus args.init_noise). `train_set()` returns the p(x) training set; it is called only for --init data."""
    if args.init == "u":
        return lambda n, y=None: uniform_start(n, image_shape, device)
    if args.init == "n":
        return lambda n, y=None: torch.randn(n, *image_shape, device=device).clamp(-1, 1)
    if args.init == "data":
        ds = train_set()
        # a random subset: folder datasets (CelebA, ImageFolder) are sorted by class, their first images few classes
        pick = torch.randperm(len(ds), generator=torch.Generator().manual_seed(args.seed))[:args.buffer_size]
        pool = torch.stack([ds[i][0] for i in pick.tolist()]).to(device)
        return lambda n, y=None: (pool[torch.randint(0, len(pool), (n,), device=device)]
                                  + args.init_noise * torch.randn(n, *image_shape, device=device)).clamp(-1, 1)
    return load_gaussian_start(args.center_dir, args.dataset, image_shape, args.init == "gm_class", device).sample
