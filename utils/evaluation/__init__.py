"""eval_maebm.py's modes, grouped by kind; each declares what it needs: the model (and checkpoint) or the run's
logs alone, and whether it needs a trained classifier."""
from utils.evaluation.classifier import mode_cali, mode_test_clf
from utils.evaluation.embedding import mode_tsne
from utils.evaluation.generative import (mode_best_samples, mode_cond_samples, mode_fid, mode_gen, mode_quality,
                                         mode_uncond_samples)
from utils.evaluation.ood import mode_logp_hist, mode_ood
from utils.evaluation.restoration import mode_denoise, mode_inpaint
from utils.evaluation.run_logs import mode_diagnostics, mode_thermo

# name: (function, needs: "model" = fn(Evaluation, out) / "logs" = fn(run_dir, out), needs a trained classifier,
# one line of help)
MODES = {
    "test_clf": (mode_test_clf, "model", True,
                 "accuracy and loss on --dataset's split (upstream: refine inputs first with --n_steps gradient steps)"),
    "fid": (mode_fid, "model", False,
            "FID/KID (and IS where the weights allow) of the buffer's --ratio most confident images per class"),
    "gen": (mode_gen, "model", False,
            "new samples: --buffer_size Gaussian starts, --n_sample_steps rounds of --n_steps steps, then FID"),
    "tsne": (mode_tsne, "model", False, "t-SNE of features of data, buffer and chain starts, coloured by class and energy"),
    "cali": (mode_cali, "model", True, "expected calibration error (20 bins) and reliability diagram"),
    "OOD": (mode_ood, "model", False, "AUROC of --score_fn telling test data from --ood_dataset"),
    "logp_hist": (mode_logp_hist, "model", False, "histograms of f(x) on the test data and the --datasets / OOD sets"),
    "uncond_samples": (mode_uncond_samples, "model", False, "grids of new chains from the Gaussian (as gen, without FID)"),
    "cond_samples": (mode_cond_samples, "model", True,
                     "buffer images grouped by predicted class (project variant: class-conditional chains)"),
    "quality": (mode_quality, "model", True, "per class, the buffer's most and least confident images"),
    "best_samples": (mode_best_samples, "model", True,
                     "per predicted class, the buffer images of highest f(x) (--ratio of them)"),
    "inpaint": (mode_inpaint, "model", False,
                "test images with --masks completed by chains on the missing pixels (started from the fitted Gaussian's "
                "exact conditional), beside that conditional's mean and samples: MSE/PSNR, accuracy, FID"),
    "denoise": (mode_denoise, "model", False,
                "test images with noise at --noise_levels restored by chains on E(x) + ||x - y||^2 / 2s^2, beside the "
                "Gaussian's posterior (the Wiener filter): MSE/PSNR, accuracy, FID"),
    "thermo": (mode_thermo, "logs", False, "figures of a --thermo run's thermo.csv (no model needed)"),
    "diagnostics": (mode_diagnostics, "logs", False, "energy gap and gradient norm along training from metrics.jsonl"),
}
