"""Modes that read a run's logs only (thermo.csv, metrics.jsonl): no model is built."""
import os

import numpy as np

from utils.errors import UserError
from utils.plotting import pyplot
from utils.run_dir import read_metrics


def mode_thermo(run, out):
    """Figures of a --thermo run's energy flows, reversibility, dissipation and information, from thermo.csv."""
    plt = pyplot()
    path = os.path.join(run, "thermo.csv")
    if not os.path.exists(path):
        raise UserError(f"{path} not found: train with --thermo to record it")
    cols = np.genfromtxt(path, delimiter=",", names=True)
    it = cols["iteration"]
    figures = []

    def save(fig, name):
        fig.savefig(os.path.join(out, name), dpi=120, bbox_inches="tight")
        plt.close(fig)
        figures.append(name)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharex=True)
    for ax, kind in zip(axes, ("marginal", "joint")):
        for q in ("W", "Q", "dE"):
            ax.plot(it, cols[f"{q}_{kind}"], label=q)
        ax.set_title(f"energy flows, {kind} energy")
        ax.set_xlabel("iteration")
        ax.legend()
    save(fig, "thermo_flows.png")
    fig, ax = plt.subplots(figsize=(5, 5))
    for kind in ("marginal", "joint"):
        ax.plot(cols[f"W_{kind}"], cols[f"dF_{kind}"], label=kind)
    lim = [min(ax.get_xlim()[0], ax.get_ylim()[0]), max(ax.get_xlim()[1], ax.get_ylim()[1])]
    ax.plot(lim, lim, "k--", lw=0.8, label="dF = W (reversible)")
    ax.set_xlabel("work W")
    ax.set_ylabel("free-energy change dF")
    ax.legend()
    save(fig, "thermo_reversibility.png")
    fig, ax = plt.subplots(figsize=(6, 4))
    for kind in ("marginal", "joint"):
        ax.plot(it, cols[f"dissipation_{kind}"], label=kind)
    ax.set_xlabel("iteration")
    ax.set_ylabel("dissipation W - dF")
    ax.legend()
    save(fig, "thermo_dissipation.png")
    fig, ax = plt.subplots(figsize=(5, 5))
    sc = ax.scatter(cols["I_marginal"], cols["I_joint"], c=it, cmap="viridis", s=6)
    fig.colorbar(sc, ax=ax, label="iteration")
    ax.set_xlabel("information I_X (marginal)")
    ax.set_ylabel("information (joint)")
    save(fig, "thermo_information.png")
    metrics = read_metrics(os.path.join(run, "metrics.jsonl"))
    train_rows = [r for r in metrics if "loss/total" in r]
    if train_rows:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([r["iteration"] for r in train_rows], [r["loss/total"] for r in train_rows], label="loss")
        if "train/acc" in train_rows[0]:
            ax.plot([r["iteration"] for r in train_rows], [r["train/acc"] for r in train_rows], label="train accuracy")
        ax.set_xlabel("iteration")
        ax.legend()
        save(fig, "thermo_training.png")
    final = {name: float(cols[name][-1]) for name in cols.dtype.names if name != "iteration"}
    return {"iterations": int(len(it)), "final": final, "figures": figures}


def cross_correlation(a, b, max_lag):
    """Normalised cross-correlation corr(a[t], b[t + lag]) for lag in [-max_lag, max_lag]."""
    a, b = (np.asarray(a, float) - np.mean(a)) / (np.std(a) + 1e-12), (np.asarray(b, float) - np.mean(b)) / (np.std(b) + 1e-12)
    lags = np.arange(-max_lag, max_lag + 1)
    corr = [np.mean(a[max(0, -k):len(a) - max(0, k)] * b[max(0, k):len(b) - max(0, -k)]) for k in lags]
    return lags, np.array(corr)


def mode_diagnostics(run, out):
    """Energy gap f(x+) - f(x-) and the samples' input-gradient norm along training with their cross-correlation;
    the chains' energy and gradient norm at their first and last step, and the long-run chains' end values."""
    plt = pyplot()
    path = os.path.join(run, "metrics.jsonl")
    all_rows = read_metrics(path)
    rows = [r for r in all_rows if "diag/grad_norm" in r]
    if len(rows) < 3:
        raise UserError(f"{path} has fewer than 3 diagnostic rows (logged every --print_every iterations of a p(x) run)")
    it = [r["iteration"] for r in rows]
    gap, grad = [r["diag/energy_gap"] for r in rows], [r["diag/grad_norm"] for r in rows]
    lags, corr = cross_correlation(gap, grad, min(20, len(rows) // 2))
    chain_rows = [r for r in all_rows if "chain/energy_first" in r]
    long_rows = [r for r in all_rows if "long_run/energy_last" in r]
    fig, axes = plt.subplots(2, 3, figsize=(16, 8))
    axes[0, 0].plot(it, gap)
    axes[0, 0].set_title("energy gap f(x+) - f(x-)")
    axes[0, 1].plot(it, grad)
    axes[0, 1].set_title("mean ||grad_x f|| at the samples")
    axes[0, 2].stem(lags, corr)
    axes[0, 2].set_title("cross-correlation (lag in logged steps)")
    for ax, quantity, title in ((axes[1, 0], "energy", "chains' mean energy E"), (axes[1, 1], "grad_norm", "chains' mean ||grad_x f||")):
        chain_it = [r["iteration"] for r in chain_rows]
        ax.plot(chain_it, [r[f"chain/{quantity}_first"] for r in chain_rows], label="first step")
        ax.plot(chain_it, [r[f"chain/{quantity}_last"] for r in chain_rows], label="last step")
        if long_rows:
            ax.plot([r["iteration"] for r in long_rows], [r[f"long_run/{quantity}_last"] for r in long_rows], "o",
                    label="end of long-run chains")
        ax.set_title(title)
        ax.legend()
    axes[1, 2].axis("off")
    for ax in (axes[0, 0], axes[0, 1], axes[1, 0], axes[1, 1]):
        ax.set_xlabel("iteration")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "diagnostics.png"), dpi=120, bbox_inches="tight")
    plt.close(fig)
    best = int(np.argmax(np.abs(corr)))
    result = {"n_rows": len(rows), "corr_lag0": float(corr[len(lags) // 2]), "peak_corr": float(corr[best]),
              "peak_lag": int(lags[best]), "figures": ["diagnostics.png"]}
    if long_rows:
        result.update({k: v for k, v in long_rows[-1].items() if k.startswith("long_run/")})
    return result

