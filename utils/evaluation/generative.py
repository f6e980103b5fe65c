"""Generative modes: FID/KID/IS of the buffer or of new chains, new samples, sample grids."""
import io
import os

from PIL import Image
import numpy as np
import torch

from utils.checkpoint import atomic_write_bytes
from utils.errors import UserError
from utils.run_dir import save_grid
from utils.sampling.buffer import buffer_census
from utils.training.objectives import CONDITIONAL_OBJECTIVES


def per_class_top(ev, images, score, classes, ratio):
    """Indices of the top `ratio` (fraction < 1 or count >= 1) images by score within each class."""
    keep = []
    for c in classes.unique():
        idx = (classes == c).nonzero().flatten()
        idx = idx[score[idx].argsort(descending=True)]
        k = int(len(idx) * ratio) if ratio < 1 else int(ratio)
        keep.append(idx[:k])
    return torch.cat(keep)


def select_confident(ev, buffer):
    """(indices, how, predicted classes or None) of upstream's --ratio selection: per class predicted by the
    classifier head, its most confident images; the project variant ranks a --pyx 0 model's buffer by energy
    instead (its classifier head is untrained)."""
    f, probs = ev.forward(buffer)
    by_energy = ev.args.variant == "project" and ev.train_args["pyx"] == 0
    score = f if by_energy else probs.max(1).values
    classes = torch.zeros(len(buffer), dtype=torch.long) if by_energy else probs.argmax(1)
    keep = per_class_top(ev, buffer, score, classes, ev.args.ratio)
    return keep, ("energy f(x)" if by_energy else "classifier confidence per predicted class"), \
        None if by_energy else classes


def buffer_block_labels(ckpt, train_args, n_classes):
    """The class of each buffer entry where training drew its chains given a class (class blocks in every process's
    shard), else None."""
    if not (train_args.get("objective") in CONDITIONAL_OBJECTIVES or train_args.get("class_cond_p_x_sample")):
        return None
    world = len(ckpt.get("rng") or [None])
    shard = len(ckpt["replay_buffer"]) // world
    return torch.arange(n_classes).repeat_interleave(shard // n_classes).repeat(world)


def buffer_diagnosis(ev, keep, classes):
    """How the scored buffer images came about: the classifier's class counts over the whole buffer and over the
    scored images, the sampler steps each entry had run since its start (training's count, saved with the buffer),
    and the classifier's agreement with the classes chains were drawn given."""
    n_classes, steps = ev.arch["n_classes"], ev.ckpt.get("buffer_steps")
    whole = buffer_census(classes, steps, n_classes)
    scored = buffer_census(classes[keep], None if steps is None else steps.cpu()[keep], n_classes)
    report = {"buffer_class_counts": whole["class_counts"], "scored_class_counts": scored["class_counts"]}
    if steps is not None:
        report.update({"buffer_entries_never_sampled": whole["never_sampled"], "buffer_mean_steps": whole["mean_steps"],
                       "scored_never_sampled": scored["never_sampled"], "scored_mean_steps": scored["mean_steps"],
                       "scored_min_steps": scored["min_steps"]})
    blocks = buffer_block_labels(ev.ckpt, ev.train_args, n_classes)
    if blocks is not None:
        report["classifier_agrees_with_chain_classes"] = float((classes == blocks).float().mean())
    return report


NEVER_MOVED_WARNING = 0.1  # warn when more than this fraction of the scored persistent chains ran no step


def persistent_chain_report(ev, steps):
    """How far upstream's persistent chains got (steps: SGLD steps each scored chain ran), printed and returned for
    the JSON, with a warning when many scored images are untouched Gaussian starts."""
    never = int((steps == 0).sum())
    upstream = ev.args.variant == "upstream"
    report = {"chains_scored": len(steps), "chains_never_sampled": never,
              "mean_sgld_steps_per_chain": float(steps.float().mean()),
              "batchnorm_running_statistics": "updated by the chains (upstream: model in train mode while sampling); "
                                              "the classifier selection and scores use the updated statistics"
                                              if upstream else "restored after sampling (project variant)"}
    print(f"{ev.args.eval}: persistent chains: {never} of {len(steps)} scored chains never sampled; "
          f"{report['mean_sgld_steps_per_chain']:.2f} SGLD steps per chain on average; BatchNorm running statistics "
          + ("were updated by the chains (upstream's procedure)" if upstream else "restored"), flush=True)
    if never > NEVER_MOVED_WARNING * len(steps):
        print(f"warning: {100 * never / len(steps):.0f}% of the scored chains are Gaussian starts that never moved; "
              f"raise --n_sample_steps (each round samples only --batch_size {ev.args.batch_size} chains) or use "
              "--variant project", flush=True)
    return report


def buffer_or_fresh(ev):
    """(images, source, SGLD steps per image or None): the checkpoint's replay buffer, or with --fresh_samples that
    many images of upstream's persistent chains."""
    if ev.args.fresh_samples:
        ev.args.buffer_size = ev.args.fresh_samples
        chains, steps = ev.persistent_chains()
        return chains, f"{ev.args.fresh_samples} new chains ({ev.args.n_sample_steps} rounds of " \
                       f"{ev.args.n_steps} steps)", steps
    buffer = ev.ckpt.get("replay_buffer")
    if buffer is None:
        raise UserError(f"checkpoint {ev.args.load_path} has no replay buffer (trained with --px 0); "
                        "use --fresh_samples N")
    return buffer, f"replay buffer ({len(buffer)} images)", None


def random_grid(samples, path, seed, n=100):
    """A grid of a random n of the scored images, so it shows every class, not the first block."""
    pick = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed))[:n]
    save_grid(samples[pick], path, nrow=10)


def new_chains(ev, n, snapshots=None):
    """(samples, JSON fields): n chains sampled as the run trained them, given balanced classes where its chains
    were drawn given labels (then with the classifier's agreement with those classes)."""
    y = ev.chain_labels(n)
    samples = ev.sample(n, ev.args.n_sample_steps, y=y, snapshots=snapshots)
    if y is None:
        return samples, {"chains_given_classes": False}
    return samples, {"chains_given_classes": True, "classifier_agrees": ev.class_agreement(samples, y)}


def mode_fid(ev, out):
    extra, scored_classes = {}, None
    if ev.args.fresh_samples and ev.args.variant == "project":
        samples, extra = new_chains(ev, ev.args.fresh_samples)
        source, selection = f"{len(samples)} new chains of {ev.args.n_sample_steps} steps", "all"
    else:
        images, source, steps = buffer_or_fresh(ev)
        keep, how, classes = select_confident(ev, images)
        samples, selection = images[keep], f"ratio {ev.args.ratio} by {how}"
        if steps is not None:
            extra = persistent_chain_report(ev, steps[keep])
        elif classes is not None:
            extra = buffer_diagnosis(ev, keep, classes)
        scored_classes = None if classes is None else classes[keep]
    random_grid(samples, os.path.join(out, "fid_samples.png"), ev.args.seed)
    return {"source": source, "selection": selection, **extra, **ev.generative_scores(samples, scored_classes)}


def save_samples(out, samples, chain=None):
    """gen_samples.npz (samples in [-1, 1]) and gen_samples/<i>.png, 8-bit images that pytorch-fid
    (python -m pytorch_fid DIR1 DIR2) and torch-fidelity read as they are."""
    buf = io.BytesIO()
    np.savez_compressed(buf, samples=samples.numpy(), **({} if chain is None else {"chain_snapshots": chain.numpy()}))
    atomic_write_bytes(os.path.join(out, "gen_samples.npz"), buf.getvalue())
    folder = os.path.join(out, "gen_samples")
    os.makedirs(folder, exist_ok=True)
    pixels = ((samples.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for i, img in enumerate(pixels):
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(os.path.join(folder, f"{i:05d}.png"))


def mode_gen(ev, out):
    if ev.args.variant == "upstream":
        samples, steps = ev.persistent_chains(out)
        result = {"n_samples": len(samples), "rounds": ev.args.n_sample_steps, "steps_per_round": ev.args.n_steps,
                  "chains_per_round": min(ev.args.batch_size, len(samples)), **persistent_chain_report(ev, steps)}
        save_samples(out, samples)
    else:
        snaps = []
        samples, labels = new_chains(ev, ev.args.n_samples, snapshots=snaps)
        chain = torch.stack(snaps, 1)  # 10 chains x snapshots
        save_grid(chain.flatten(0, 1), os.path.join(out, "gen_chains.png"), nrow=len(snaps))
        save_samples(out, samples, chain)
        result = {"n_samples": len(samples), "n_sample_steps": ev.args.n_sample_steps, **labels,
                  "snapshot_steps": [min(i * ev.args.snapshot_every, ev.args.n_sample_steps) for i in range(len(snaps))]}
    random_grid(samples, os.path.join(out, "gen_samples.png"), ev.args.seed)
    if not ev.args.no_fid:
        result.update(ev.generative_scores(samples))
    return result


def mode_uncond_samples(ev, out):
    if ev.args.variant == "upstream":
        x, steps = ev.persistent_chains(out)
        random_grid(x, os.path.join(out, "uncond_samples.png"), ev.args.seed)
        return {"n": len(x), "rounds": ev.args.n_sample_steps, "steps_per_round": ev.args.n_steps,
                **persistent_chain_report(ev, steps), "figures": ["uncond_samples.png", "samples_<round>.png"]}
    x = ev.sample(100, ev.args.n_sample_steps)
    save_grid(x, os.path.join(out, "uncond_samples.png"), nrow=10)
    return {"n": 100, "n_sample_steps": ev.args.n_sample_steps, "figures": ["uncond_samples.png"]}


def mode_cond_samples(ev, out):
    """Upstream: buffer images grouped by predicted class, grid i holding images i*k..(i+1)*k of each class;
    project variant: class-conditional chains."""
    k = ev.args.n_per_class
    if ev.args.variant == "upstream":
        images, source, steps = buffer_or_fresh(ev)
        report = {} if steps is None else persistent_chain_report(ev, steps)
        pred = ev.forward(images)[1].argmax(1)
        each = [images[pred == c] for c in range(ev.arch["n_classes"])]
        n_grids = min(100, -(-max(len(e) for e in each) // k))
        for i in range(n_grids):
            save_grid(torch.cat([e[i * k:(i + 1) * k] for e in each]), os.path.join(out, f"samples_{i}.png"), nrow=k)
        return {"source": source, **report, "per_class_counts": [len(e) for e in each], "grids": n_grids,
                "figures": ["samples_<i>.png"]}
    y = torch.arange(ev.arch["n_classes"]).repeat_interleave(k)
    x = ev.sample(len(y), ev.args.n_sample_steps, y=y, joint=True)
    save_grid(x, os.path.join(out, "cond_samples.png"), nrow=k)
    return {"n_per_class": k, "n_sample_steps": ev.args.n_sample_steps, "figures": ["cond_samples.png"],
            "classifier_agrees": ev.class_agreement(x, y)}


def mode_best_samples(ev, out):
    """Upstream's best_samples: per predicted class, the --ratio buffer images of highest logsumexp of the logits."""
    images, source, steps = buffer_or_fresh(ev)
    report = {} if steps is None else persistent_chain_report(ev, steps)
    with torch.no_grad():
        logits = ev.batched(lambda xb: ev.model.classify(xb).cpu(), images)
    pred, px = logits.argmax(1), logits.logsumexp(1)
    counts = {}
    for c in range(ev.arch["n_classes"]):
        idx = (pred == c).nonzero().flatten()
        top = idx[px[idx].argsort(descending=True)][:int(len(idx) * ev.args.ratio) if ev.args.ratio < 1 else int(ev.args.ratio)]
        counts[c] = len(top)
        if len(top):
            save_grid(images[top], os.path.join(out, f"topk_{c}.png"))
    return {"source": source, **report, "per_class_counts": counts, "figures": "topk_<c>.png"}


def mode_quality(ev, out):
    buffer = ev.ckpt.get("replay_buffer")
    if buffer is None:
        raise UserError(f"checkpoint {ev.args.load_path} has no replay buffer (trained with --px 0)")
    _, probs = ev.forward(buffer)
    conf, pred = probs.max(1)
    k, counts = ev.args.n_per_class, {}
    for c in range(ev.arch["n_classes"]):
        idx = (pred == c).nonzero().flatten()
        counts[c] = len(idx)
        if len(idx) == 0:
            continue
        order = idx[conf[idx].argsort(descending=True)]
        save_grid(torch.cat([buffer[order[:k]], buffer[order.flip(0)[:k]]]), os.path.join(out, f"class_{c}_top_bottom.png"), nrow=k)
    return {"per_class_counts": counts, "figures": "class_<c>_top_bottom.png (row 1: most confident, row 2: least)"}

