"""Objectives that train an energy without MCMC chains: denoising score matching (Vincent 2011), sliced score
matching (Song et al. 2019) and noise-contrastive estimation (Gutmann & Hyvarinen 2010) against a noise with an
exact log density. Each is a module beside JointLoss with the same call, so the loop, checkpoints and the
divergence guard serve it unchanged."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.sampling.frozen import frozen_model_state
from utils.training.objectives import pyx_loss

CHAIN_FREE_OBJECTIVES = ("dsm", "ssm", "nce", "energy_matching")  # no persistent chains, no replay buffer


def score(neg_energy, x):
    """(f(x), grad_x f(x)) with the graph kept, so a loss on the score trains the energy (a double backward).
    The gradient is taken outside autocast: each backward op then runs in its forward's dtype."""
    x = x.detach().requires_grad_(True)
    f = neg_energy(x)
    with torch.autocast(x.device.type, enabled=False):
        s, = torch.autograd.grad(f.sum(), x, create_graph=True)
    return x, f, s


def _per_image(t):
    return t.flatten(1).sum(1)


def dsm_loss(neg_energy, x, sigma, eps):
    """Denoising score matching at x~ = x + sigma eps, each image's term weighted by sigma^2 as in Song & Ermon
    (2019): 0.5 ||sigma s(x~) + eps||^2, so every noise level contributes O(dim). `sigma`: one level per image."""
    sigma = sigma.view(-1, *[1] * (x.dim() - 1))
    _, f, s = score(neg_energy, x + sigma * eps)
    return 0.5 * _per_image((sigma * s + eps) ** 2).mean(), f


def ssm_loss(neg_energy, x, v):
    """Sliced score matching: v^T (ds/dx) v + 0.5 (v^T s)^2 per (image, projection); `v` holds the projections,
    x repeated to match."""
    x, f, s = score(neg_energy, x)
    sv = _per_image(s * v)
    with torch.autocast(x.device.type, enabled=False):
        hv, = torch.autograd.grad(sv.sum(), x, create_graph=True)
    return (_per_image(hv * v) + 0.5 * sv ** 2).mean(), f


def nce_loss(log_p_data, log_p_noise, log_q_data, log_q_noise, ratio):
    """NCE with `ratio` noise samples per data sample: logistic regression of data against noise on
    G = log p_model - log q - log ratio; (loss, the classifier's accuracy on both)."""
    g_data = log_p_data - log_q_data - math.log(ratio)
    g_noise = log_p_noise - log_q_noise - math.log(ratio)
    loss = -(F.logsigmoid(g_data).mean() + ratio * F.logsigmoid(-g_noise).mean())
    acc = torch.cat([(g_data > 0).float(), (g_noise < 0).float()]).mean()
    return loss, acc


def start_log_z(model, noise, n=256):
    """NCE's log Z before training: where the model's density equals the noise's on average over n noise draws
    (mean f - mean log q), so the classifier starts near chance instead of hundreds of nats off (log q of a
    784-pixel image is in the hundreds). The model's state (BatchNorm statistics) is left as it was."""
    z = noise.sample(n)
    with frozen_model_state(model, train=True), torch.no_grad():  # as the loss sees the noise
        value = (model(z)[0].double() - noise.log_prob(z).double()).mean()
    with torch.no_grad():
        model.log_z.fill_(float(value))


class ChainFreeLoss(nn.Module):
    """px times the chain-free generative term plus pyx times the p(y|x) cross-entropy; the call of JointLoss
    (chains are never drawn, so x_samples and y_samples are None).

    dsm: one noise level per image, drawn uniformly from `sigmas`; ssm: `projections` Rademacher or Gaussian
    projections per image; `per_pixel`: their loss divided by the values per image; nce: `ratio` draws per data
    image from `noise` (log_prob exact), log Z learned (the model's log_z)."""

    def __init__(self, model, objective, px, pyx, sigmas=(0.1,), projections=1, projection_dist="rademacher",
                 noise=None, ratio=1, per_pixel=False):
        super().__init__()
        self.model, self.objective, self.px, self.pyx = model, objective, px, pyx
        self.per_pixel = per_pixel
        self.register_buffer("sigmas", torch.as_tensor(sigmas, dtype=torch.float32), persistent=False)
        self.projections, self.projection_dist = projections, projection_dist
        self.noise, self.ratio = noise, ratio

    def neg_energy(self, x, y=None):
        return self.model(x, y)[0]

    def scaled(self, loss, x):
        # a per-image sum is hundreds of times the cross-entropy beside it (784 values per Fashion-MNIST image)
        return loss / x[0].numel() if self.per_pixel else loss

    def generative_term(self, x, iteration=0):
        """(loss, detached values to log) of the objective on a batch of data images (at `iteration`, which only
        energy_matching's phases depend on)."""
        if self.objective == "dsm":
            sigma = self.sigmas[torch.randint(len(self.sigmas), (len(x),), device=x.device)]
            loss, f = dsm_loss(self.neg_energy, x, sigma, torch.randn_like(x))
            return self.scaled(loss, x), {"energy/f_noisy_data": f.detach().mean()}
        if self.objective == "ssm":
            x_rep = x.repeat(self.projections, *[1] * (x.dim() - 1))
            v = torch.randn_like(x_rep)
            if self.projection_dist == "rademacher":
                v = v.sign()
            loss, f = ssm_loss(self.neg_energy, x_rep, v)
            return self.scaled(loss, x), {"energy/f_data": f.detach().mean()}
        x_noise = self.noise.sample(self.ratio * len(x))
        log_z = self.model.log_z
        f_data, f_noise = self.neg_energy(x), self.neg_energy(x_noise)
        loss, acc = nce_loss(f_data - log_z, f_noise - log_z, self.noise.log_prob(x), self.noise.log_prob(x_noise),
                             self.ratio)
        return loss, {"energy/f_data": f_data.detach().mean(), "energy/f_noise": f_noise.detach().mean(),
                      "nce/log_z": log_z.detach(), "nce/acc": acc}

    def forward(self, x_data=None, x_samples=None, x_labelled=None, y_labelled=None, y_data=None, y_samples=None,
                iteration=0):
        """(loss, detached values to log); terms whose weight is 0 take None inputs. `iteration`: the loop's, which
        only objectives with phases (energy_matching) read."""
        loss, logs = 0.0, {}
        if self.px > 0:
            l_px, values = self.generative_term(x_data, iteration)
            loss = loss + self.px * l_px
            logs.update({"loss/px": l_px.detach(), **values})
        if self.pyx > 0:
            l_pyx, acc = pyx_loss(self.model.classify(x_labelled), y_labelled)
            loss = loss + self.pyx * l_pyx
            logs.update({"loss/pyx": l_pyx.detach(), "train/acc": acc})
        return loss, logs
