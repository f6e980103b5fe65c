"""Per noise level, how much of the score a checkpoint's energy has learned, on test images: the DSM loss per pixel
(0.5 when the score is zero) and the mean squared error of the one-step denoiser x~ + sigma^2 grad f(x~) against
that of the noisy images x~ = x + sigma N(0, I).

    python bench/score_levels.py --load_path RUN/last_ckpt.pt --sigmas 1 0.5 0.25 0.1 0.05 0.025
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from models import recorded_arch  # noqa: E402
from utils.checkpoint import load_checkpoint  # noqa: E402
from utils.data import image_transform, load_dataset  # noqa: E402
from utils.errors import ArgumentParser, UserError, nonneg_int, positive_float, positive_int, run_cli  # noqa: E402
from utils.evaluation.context import load_model  # noqa: E402
from utils.training.chain_free import dsm_loss, score  # noqa: E402


def parse(argv=None):
    p = ArgumentParser("bench/score_levels.py", description=__doc__.split("\n")[0],
                       example="python bench/score_levels.py --load_path experiment/run/last_ckpt.pt --sigmas 1 0.1")
    p.add_argument("--load_path", required=True, help="a train_maebm.py checkpoint (its weight average if it has one)")
    p.add_argument("--sigmas", type=positive_float, nargs="+", default=[1, 0.5, 0.25, 0.1, 0.05, 0.025])
    p.add_argument("--n", type=positive_int, default=500, help="the first N test images")
    p.add_argument("--batch_size", type=positive_int, default=100)
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the noise")
    p.add_argument("--data_root", default=None, help="default: the checkpoint's")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--out", default=None, help="also write the rows to this JSON file")
    a = p.parse_args(argv)
    if not os.path.isfile(a.load_path):
        raise UserError(f"--load_path: no checkpoint file {a.load_path}")
    if a.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible")
    return a


def score_levels(neg_energy, x, sigmas, generator):
    """{sigma: (DSM loss per pixel, MSE of the noisy images, MSE of the one-step denoiser)} on the batch x."""
    rows = {}
    for sigma in sigmas:
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        loss, _ = dsm_loss(neg_energy, x, torch.full((len(x),), sigma, dtype=x.dtype, device=x.device), eps)
        noisy = x + sigma * eps
        denoised = noisy + sigma ** 2 * score(neg_energy, noisy)[2].detach()
        rows[sigma] = (float(loss) / x[0].numel(), float(((noisy - x) ** 2).mean()),
                       float(((denoised - x) ** 2).mean()))
    return rows


def main(argv=None):
    a = parse(argv)
    device = torch.device(a.device)
    ckpt = load_checkpoint(a.load_path)
    args = ckpt["args"]
    model = load_model(ckpt, recorded_arch(ckpt["arch"]), args, a.load_path, device)
    dataset = args["dataset"]
    test = load_dataset(dataset, a.data_root or args["data_root"], False, image_transform(dataset, False))
    generator = torch.Generator().manual_seed(a.seed)
    totals = {sigma: torch.zeros(3, dtype=torch.float64) for sigma in a.sigmas}
    n = min(a.n, len(test))
    for start in range(0, n, a.batch_size):
        x = torch.stack([test[i][0] for i in range(start, min(start + a.batch_size, n))]).to(device)
        for sigma, values in score_levels(lambda z: model(z)[0], x, a.sigmas, generator).items():
            totals[sigma] += torch.tensor(values, dtype=torch.float64) * len(x)
    rows = [{"sigma": sigma, "dsm_per_pixel": v[0] / n, "mse_noisy": v[1] / n, "mse_denoised": v[2] / n}
            for sigma, v in ((s, t.tolist()) for s, t in totals.items())]
    print(f"{n} test images; the DSM loss per pixel is 0.5 when the score is zero")
    print("sigma | DSM per pixel | MSE noisy | MSE denoised")
    for r in rows:
        print(f"{r['sigma']:g} | {r['dsm_per_pixel']:.4f} | {r['mse_noisy']:.4f} | {r['mse_denoised']:.4f}")
    if a.out:
        with open(a.out, "w") as fh:
            json.dump({"n": n, "seed": a.seed, "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
