"""Embedding mode: t-SNE of the features of data, buffer and chain starts."""
import os

import numpy as np
import torch

from utils.plotting import pyplot


def plot_tsne(points, classes, energies, n_classes):
    """Two t-SNE panels (class, energy) with one colour scale per panel shared by all sets."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(14, 6))
    markers = {"data": "o", "buffer": "^", "start": "x"}
    class_cmap = "tab10" if n_classes <= 10 else "turbo"
    e_all = torch.cat(list(energies.values()))
    e_range = dict(vmin=e_all.min().item(), vmax=e_all.max().item())
    for name, pts in points.items():
        sc_class = axes[0].scatter(pts[:, 0], pts[:, 1], c=classes[name].numpy(), cmap=class_cmap, vmin=-0.5,
                                   vmax=n_classes - 0.5, s=6, marker=markers[name])
        sc = axes[1].scatter(pts[:, 0], pts[:, 1], c=energies[name].numpy(), cmap="viridis", **e_range, s=6,
                             marker=markers[name])
        for ax in axes:
            ax.scatter([], [], c="gray", s=20, marker=markers[name], label=name)
    axes[0].set_title("t-SNE of features, coloured by class (predicted for samples)")
    axes[1].set_title("coloured by energy E(x)")
    fig.colorbar(sc_class, ax=axes[0], ticks=range(n_classes) if n_classes <= 10 else None, label="class")
    fig.colorbar(sc, ax=axes[1], label="E(x)")
    for ax in axes:
        ax.legend()
    return fig


def tsne_sets(ev, n):
    """{name: images} and data labels. Upstream: n training images (seed 1234), the buffer, n chain starts;
    project variant: n test images instead."""
    upstream = ev.args.variant == "upstream"
    data, labels = ev.images(ev.dataset(train=upstream), n, seed=1234 if upstream else ev.args.seed)
    sets = {"data": data}
    if ev.ckpt.get("replay_buffer") is not None:
        buf = ev.ckpt["replay_buffer"]
        sets["buffer"] = buf[:n] if upstream else \
            buf[torch.randperm(len(buf), generator=torch.Generator().manual_seed(ev.args.seed))[:n]]
    sets["start"] = ev.start_fn()(n).cpu()
    return sets, labels


def mode_tsne(ev, out):
    """Features and energies with BatchNorm on batch statistics (upstream) or in eval mode (project variant)."""
    plt = pyplot()
    from sklearn.manifold import TSNE
    n = ev.args.n_points or 1000
    sets, labels = tsne_sets(ev, n)
    if ev.args.variant == "upstream":
        f_and_h = {k: ev.batch_statistics_features(v) for k, v in sets.items()}
        energies, feats = {k: -v[0] for k, v in f_and_h.items()}, {k: v[1] for k, v in f_and_h.items()}
    else:
        feats = {k: ev.features(v) for k, v in sets.items()}
        energies = {k: -ev.forward(v)[0] for k, v in sets.items()}
    classes = {k: (labels if k == "data" else ev.forward(v)[1].argmax(1)) for k, v in sets.items()}
    print(f"tsne: embedding {sum(len(v) for v in feats.values())} feature vectors", flush=True)
    emb = TSNE(n_components=2, init="pca", random_state=0, perplexity=min(30, n - 1)).fit_transform(
        torch.cat(list(feats.values())).numpy())
    parts = np.split(emb, np.cumsum([len(v) for v in feats.values()])[:-1])
    fig = plot_tsne(dict(zip(feats, parts)), classes, energies, ev.arch["n_classes"])
    fig.savefig(os.path.join(out, "tsne.png"), dpi=120, bbox_inches="tight")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.violinplot([energies[k].numpy() for k in energies], showmedians=True)
    ax.set_xticks(range(1, len(energies) + 1), list(energies))
    ax.set_ylabel("energy E(x) = -f(x)")
    fig.savefig(os.path.join(out, "energy_violin.png"), dpi=120, bbox_inches="tight")
    plt.close(fig)
    return {"n_per_set": n, "mean_energy": {k: float(v.mean()) for k, v in energies.items()},
            "figures": ["tsne.png", "energy_violin.png"]}

