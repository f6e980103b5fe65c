"""The fitted Gaussian's exact answers to restoration: its conditional given known pixels (inpainting) and its
posterior given a noisy image (denoising, the Wiener filter). Flat vectors, float64, batched with fixed shapes."""
import math

import torch

# memory of one batch of d x d float64 matrices: images per batch = BATCH_BYTES // (8 d^2), at least 1
BATCH_BYTES = 2 ** 28


def _chunks(n, d):
    step = max(1, BATCH_BYTES // (8 * d * d))
    return [slice(i, i + step) for i in range(0, n, step)]


def condition_on_pixels(mean, cov, known, x, draw=None, with_cov=False):
    """N(mean, cov) given x's values where `known` (N x d bool, a mask per image): (conditional mean, log density of
    the known values, conditional samples or None, conditional covariance or None).

    With o = diag(known): A = o cov o + (I - o) is cov's known block beside an identity, so one Cholesky factor per
    image gives z = A^-1 o (x - mean) and the conditional mean mean + cov z (equal to x on known pixels). Samples use
    Matheron's rule: joint draws `draw` (N x D x d, D per image, from N(mean, cov)) moved by the same factor's solve
    of x - draw."""
    mean, cov, x = mean.double(), cov.double(), x.double()
    n, d = x.shape
    out_mean, out_loglik = torch.empty_like(x), torch.empty(n, dtype=torch.float64, device=x.device)
    out_draw = torch.empty(draw.shape, dtype=torch.float64, device=x.device) if draw is not None else None
    out_cov = torch.empty(n, d, d, dtype=torch.float64, device=x.device) if with_cov else None
    same_mask = bool((known == known[:1]).all())  # centre squares and halves: one factor for every image
    for part in _chunks(n, d):
        o = known[part].double()
        factor_of = o[:1] if same_mask else o
        a = factor_of[:, :, None] * cov * factor_of[:, None, :] + torch.diag_embed(1 - factor_of)
        chol = torch.linalg.cholesky(a)
        r = (x[part] - mean) * o
        z = torch.cholesky_solve(r[..., None], chol)[..., 0]
        out_mean[part] = torch.where(known[part], x[part], mean + z @ cov)
        logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        out_loglik[part] = -0.5 * ((r * z).sum(1) + logdet + o.sum(1) * math.log(2 * math.pi))
        if draw is not None:
            joint = draw[part].double()
            w = torch.cholesky_solve(((x[part, None] - joint) * o[:, None]).transpose(1, 2), chol).transpose(1, 2)
            out_draw[part] = torch.where(known[part, None], x[part, None], joint + w @ cov)
        if with_cov:
            b = cov * o[:, None, :]  # cov o
            out_cov[part] = cov - b @ torch.cholesky_solve(b.transpose(1, 2), chol)
    return out_mean, out_loglik, out_draw, out_cov


def denoising_posterior(mean, cov, y, sigma, draw=None):
    """N(mean, cov) prior, y = x + sigma N(0, I) (N x d): (posterior mean (the Wiener filter), log density of y,
    posterior samples or None, posterior covariance). Samples use Matheron's rule: joint draws `draw` (N x D x d) of x,
    each with its own noise, moved by the solve of y minus their noisy version."""
    mean, cov, y = mean.double(), cov.double(), y.double()
    d = len(mean)
    chol = torch.linalg.cholesky(cov + sigma ** 2 * torch.eye(d, dtype=torch.float64, device=cov.device))
    r = y - mean
    z = torch.cholesky_solve(r.T, chol).T
    post_mean = mean + z @ cov
    logdet = 2 * torch.log(torch.diagonal(chol)).sum()
    loglik = -0.5 * ((r * z).sum(1) + logdet + d * math.log(2 * math.pi))
    post_cov = cov - cov @ torch.cholesky_solve(cov, chol)
    samples = None
    if draw is not None:
        draw = draw.double()
        residual = (y[:, None] - draw - sigma * torch.randn_like(draw)).reshape(-1, d)
        samples = draw + (torch.cholesky_solve(residual.T, chol).T @ cov).reshape(draw.shape)
    return post_mean, loglik, samples, post_cov
