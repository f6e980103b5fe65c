"""The Gaussian statistics of training images that M-EBM starts its SGLD chains from."""
import os

import torch
import torch.nn.functional as F

from utils.errors import UserError

MAX_FIT_SIZE = 32  # larger images are fitted at 32x32 and upsampled, keeping the covariance 3072x3072 at most


def fit_size(image_size):
    """Side length at which the Gaussian of `image_size` images is fitted."""
    return min(image_size, MAX_FIT_SIZE)


def _flatten_at_fit_size(x):
    size = fit_size(x.shape[-1])
    if x.shape[-1] != size:
        x = F.adaptive_avg_pool2d(x, size)
    return x.reshape(len(x), -1)


class GaussianMoments:
    """Streaming float64 sums for the mean and biased covariance, globally and per class."""

    def __init__(self, n_classes=0):
        self.n_classes = n_classes
        self.count, self.sum, self.outer = 0, None, None
        self.class_count = self.class_sum = self.class_outer = None

    def update(self, x, y=None):
        v = _flatten_at_fit_size(x).to(torch.float64)
        if self.sum is None:
            d = v.shape[1]
            self.sum, self.outer = torch.zeros(d, dtype=torch.float64), torch.zeros(d, d, dtype=torch.float64)
            if self.n_classes:
                self.class_count = torch.zeros(self.n_classes, dtype=torch.float64)
                self.class_sum = torch.zeros(self.n_classes, d, dtype=torch.float64)
                self.class_outer = torch.zeros(self.n_classes, d, d, dtype=torch.float64)
        self.count += len(v)
        self.sum += v.sum(0)
        self.outer += v.T @ v
        if self.n_classes:
            for c in y.unique().tolist():
                vc = v[y == c]
                self.class_count[c] += len(vc)
                self.class_sum[c] += vc.sum(0)
                self.class_outer[c] += vc.T @ vc

    @staticmethod
    def _moments(count, s, outer):
        mean = s / count
        return mean, outer / count - torch.outer(mean, mean)

    def global_moments(self):
        if not self.count:
            raise UserError("no images to fit the Gaussian on")
        return self._moments(self.count, self.sum, self.outer)

    def class_moments(self):
        if (self.class_count == 0).any():
            missing = (self.class_count == 0).nonzero().flatten().tolist()
            raise UserError(f"classes {missing} have no images to fit a per-class Gaussian on")
        means, covs = zip(*(self._moments(self.class_count[c], self.class_sum[c], self.class_outer[c])
                            for c in range(self.n_classes)))
        return torch.stack(means), torch.stack(covs)


def fit_gaussian_center(loader, n_classes=0):
    """Mean and covariance (float64) of every image a loader yields; per class too when n_classes > 0."""
    moments = GaussianMoments(n_classes)
    for x, y in loader:
        moments.update(x, y)
    return moments


def center_paths(center_dir, dataset, per_class=False):
    """Upstream's file names: {dataset}_mean_one.pt / {dataset}_cov_one.pt (and _class for per-class)."""
    tag = "class" if per_class else "one"
    return (os.path.join(center_dir, f"{dataset}_mean_{tag}.pt"), os.path.join(center_dir, f"{dataset}_cov_{tag}.pt"))


class GaussianStart:
    """Draws chain starts from N(mean, cov + jitter I), clamped to [-1,1], in one batched call."""

    def __init__(self, mean, cov, image_shape, jitter=1e-4, device="cpu"):
        self.image_shape = tuple(image_shape)
        self.per_class = mean.dim() == 2
        d = mean.shape[-1]
        eye = torch.eye(d, dtype=torch.float64)
        scale_tril, info = torch.linalg.cholesky_ex(cov.to(torch.float64) + jitter * eye)
        if (info != 0).any():
            raise UserError("Gaussian covariance is not positive definite; refit it with one_center.py")
        self.mean = mean.to(device=device, dtype=torch.float32)
        self.scale_tril = scale_tril.to(device=device, dtype=torch.float32)

    def draw(self, n, y=None, generator=None):
        """n unclamped flat vectors at the fit size; per-class Gaussians use class y (or, when y is None, the
        equal-weight mixture of the classes). Fixed shapes throughout: no host sync, whatever y holds."""
        if self.per_class and y is None:
            return self._mixture(n, generator)
        eps = torch.randn(n, self.mean.shape[-1], device=self.mean.device, generator=generator)
        if self.per_class:
            return self._given_classes(eps, y.to(self.mean.device))
        return self.mean + eps @ self.scale_tril.T  # one GEMM: a batched matmul would copy L once per chain

    def sample(self, n, y=None, generator=None):
        """n images in [-1, 1] (see draw)."""
        c, size = self.image_shape[0], fit_size(self.image_shape[-1])
        x = self.draw(n, y, generator).view(n, c, size, size).clamp(-1, 1)
        if size != self.image_shape[-1]:
            x = F.interpolate(x, size=self.image_shape[-2:], mode="nearest")
        return x

    def _mixture(self, n, generator):
        """n draws of the equal-weight mixture: ceil(n / classes) from each class in one batched matmul, n of them
        taken in random order, so that each row's class is uniform (and the classes as balanced as n allows)."""
        classes, d = self.mean.shape
        per = -(-n // classes)
        eps = torch.randn(classes, per, d, device=self.mean.device, generator=generator)
        v = torch.baddbmm(self.mean[:, None, :], eps, self.scale_tril.transpose(1, 2)).view(classes * per, d)
        return v[torch.randperm(classes * per, device=self.mean.device, generator=generator)[:n]]

    def _given_classes(self, eps, y):
        """mean[y] + scale_tril[y] @ eps: each class's factor applied to every row, each row keeping its own class's.
        classes x the work of one GEMM, but fixed shapes; gathering a d x d factor per chain would take n x d x d
        memory (24 GB for a 10,000-chain Fashion-MNIST buffer), splitting rows by class a host sync per draw."""
        v = self.mean[y]
        for c in range(len(self.mean)):
            v = torch.where((y == c)[:, None], v + eps @ self.scale_tril[c].T, v)
        return v


def load_gaussian_start(center_dir, dataset, image_shape, per_class=False, device="cpu"):
    """GaussianStart from one_center.py's files, with a clear error naming a missing or wrong file."""
    mean_path, cov_path = center_paths(center_dir, dataset, per_class)
    flag = " --per_class" if per_class else ""
    for path in (mean_path, cov_path):
        if not os.path.exists(path):
            raise UserError(f"Gaussian file {path} not found; create it with: "
                            f"python one_center.py --dataset {dataset} --save_dir {center_dir}{flag} "
                            "(add the same --data_root), or pass --init u")
    try:
        mean = torch.load(mean_path, map_location="cpu", weights_only=True)
        cov = torch.load(cov_path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"Gaussian files {mean_path} / {cov_path} cannot be read ({type(e).__name__}); refit them") from None
    c, size = image_shape[0], fit_size(image_shape[-1])
    d = c * size * size
    want_mean = (d,) if not per_class else (None, d)
    ok = (isinstance(mean, torch.Tensor) and isinstance(cov, torch.Tensor) and mean.dim() == len(want_mean)
          and mean.shape[-1] == d and cov.shape == (*mean.shape[:-1], d, d))
    if not ok:
        got = tuple(mean.shape) if isinstance(mean, torch.Tensor) else type(mean).__name__
        raise UserError(f"Gaussian file {mean_path} has shape {got}, expected a mean of {d} values "
                        f"({c}x{size}x{size}) for {dataset}; refit with one_center.py")
    if not (torch.isfinite(mean).all() and torch.isfinite(cov).all()):
        raise UserError(f"Gaussian files {mean_path} / {cov_path} contain NaN or inf; refit them")
    try:
        return GaussianStart(mean, cov, image_shape, device=device)
    except UserError as e:
        raise UserError(f"{cov_path}: {e}") from None
