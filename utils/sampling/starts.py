"""Where SGLD chains start (--init), one function shared by training, evaluation and benchmarks."""
import math

import torch
import torch.distributions as D

from utils.errors import UserError
from utils.gaussian import fit_size, load_gaussian_start
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


class ImageDensity:
    """Images drawn by `draw(n)` (flat) and scored by a torch.distributions distribution over flat images."""

    def __init__(self, dist, image_shape, draw=None):
        self.dist, self.image_shape = dist, tuple(image_shape)
        self.draw = draw or (lambda n: dist.sample((n,)))

    def sample(self, n):
        return self.draw(n).view(n, *self.image_shape)

    def log_prob(self, x):
        return self.dist.log_prob(x.flatten(1).float())


def start_density(args, image_shape, device):
    """The --init distribution with its exact log density, unclamped (NCE's noise): u uniform on [-1,1]^d, n the
    standard normal, gm the fitted Gaussian, gm_class the equal-weight mixture of the per-class Gaussians."""
    d, draw = math.prod(image_shape), None
    if args.init == "u":
        dist = D.Independent(D.Uniform(-torch.ones(d, device=device), torch.ones(d, device=device)), 1)
    elif args.init == "n":
        dist = D.Independent(D.Normal(torch.zeros(d, device=device), torch.ones(d, device=device)), 1)
    elif args.init in ("gm", "gm_class"):
        if fit_size(image_shape[-1]) != image_shape[-1]:
            raise UserError(f"--init {args.init}: the Gaussian of {image_shape[-1]}x{image_shape[-1]} images is fitted "
                            f"at {fit_size(image_shape[-1])}x{fit_size(image_shape[-1])}, so it has no exact density "
                            "over the images; use --init u or n")
        gauss = load_gaussian_start(args.center_dir, args.dataset, image_shape, args.init == "gm_class", device)
        dist = D.MultivariateNormal(gauss.mean, scale_tril=gauss.scale_tril)
        if gauss.per_class:
            classes = D.Categorical(logits=torch.zeros(len(gauss.mean), device=device))
            dist = D.MixtureSameFamily(classes, dist)
        draw = gauss.draw  # torch.distributions broadcasts the d x d factor over the batch: 1.4 s a 32-image draw
    else:
        raise UserError(f"--init {args.init} has no density; NCE's noise needs u, n, gm or gm_class")
    return ImageDensity(dist, image_shape, draw)
