"""Measurements during training: test accuracy and the samples' input-gradient size."""
import torch
import torch.nn.functional as F


def input_grad_norm(model, x, y=None):
    """Mean ||grad_x f(x)|| over a batch, in eval mode so BatchNorm statistics stay as they are."""
    was_training = model.training
    model.eval()
    x = x.detach().requires_grad_(True)
    g, = torch.autograd.grad(model(x, y)[0].sum(), x)
    model.train(was_training)
    return float(g.flatten(1).norm(dim=1).mean())


@torch.no_grad()
def evaluate_classifier(model, loader, device):
    """(mean cross-entropy, accuracy, mean f(x)) of the model in eval mode over a labelled loader."""
    was_training = model.training
    model.eval()
    loss_sum, correct, f_sum, n = 0.0, 0, 0.0, 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        fx, logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        f_sum += fx.sum().item()
        n += len(y)
    model.train(was_training)
    return loss_sum / n, correct / n, f_sum / n
