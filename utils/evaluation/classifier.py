"""Classifier modes: test accuracy (with upstream's input refinement) and calibration."""
import os

import torch
import torch.nn.functional as F

from utils.metrics import calibration_bins, expected_calibration_error
from utils.plotting import pyplot


def mode_test_clf(ev, out):
    x, y = ev.test_images()
    if ev.args.n_steps > 0:
        x = ev.refine(x)
    with torch.no_grad():
        logits = ev.batched(lambda xb: ev.model.classify(xb).cpu(), x)
    return {"test_loss": float(F.cross_entropy(logits, y)), "test_acc": float((logits.argmax(1) == y).float().mean()),
            "n": len(y), "refine_steps": ev.args.n_steps}


CALIBRATION_BINS = 20  # upstream's ECELoss(20) and 0.05-wide reliability bins


def mode_cali(ev, out):
    plt = pyplot()
    x, y = ev.test_images()
    _, probs = ev.forward(x)
    conf, pred = probs.max(1)
    correct = (pred == y).numpy()
    ece = expected_calibration_error(conf.numpy(), correct, CALIBRATION_BINS)
    bins = calibration_bins(conf.numpy(), correct, CALIBRATION_BINS)
    fig, ax = plt.subplots(figsize=(5, 5))
    centers = [(b[0] + b[1]) / 2 for b in bins]
    ax.bar(centers, [b[4] for b in bins], width=1 / len(bins), edgecolor="k", label="accuracy")
    ax.plot([0, 1], [0, 1], "r--", label="perfect calibration")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability diagram, ECE {100 * ece:.2f}%")
    ax.legend()
    fig.savefig(os.path.join(out, "reliability.png"), dpi=120, bbox_inches="tight")
    plt.close(fig)
    return {"ece": ece, "test_acc": float(correct.mean()), "n": len(y),
            "bins": [dict(zip(("lo", "hi", "count", "confidence", "accuracy"), b)) for b in bins]}

