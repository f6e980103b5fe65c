"""What the loop reports: metric rows, sample grids, long-run probes, and the end-of-epoch evaluation."""
import os

import torch

from models.energy import class_conditional
from utils.distributed import broadcast_object, main_only
from utils.run_dir import read_metrics, save_grid
from utils.sampling.buffer import buffer_census, uniform_start
from utils.sampling.diagnostics import chain_summary, long_run_chains, plot_chain_trace
from utils.sampling.frozen import frozen_model_state
from utils.sampling.samplers import chains_in_train_mode, run_sampler
from utils.training.measure import evaluate_classifier, input_grad_norm


def log_iteration(parts, logger, bar, result, iteration, epoch, lr):
    """One metrics row (one host sync): losses, energies, the learning diagnostics and the chains' summary."""
    values = {k: float(v) for k, v in {"loss/total": result.loss.detach(), **result.logs}.items()}
    if "energy/f_samples" in values:  # contrastive divergence: energy gap to the chains, their input-gradient size
        values["diag/energy_gap"] = values["energy/f_data"] - values["energy/f_samples"]
        values["diag/grad_norm"] = input_grad_norm(parts.model, result.x_q, result.y_q)
    if parts.plan.sampling:
        values.update(chain_summary(torch.stack(result.trace), "chain"))
    logger.metrics(iteration, epoch=epoch, lr=lr, **values)
    # shown at the bar's next regular update: a forced refresh here would write a bar line per logged iteration
    bar.set_postfix(ep=epoch, loss=f"{values['loss/total']:.4f}", acc=f"{values.get('train/acc', float('nan')):.3f}",
                    refresh=False)
    logger.log(f"it {iteration} ep {epoch} lr {lr:.4g} " + " ".join(f"{k}={v:.4f}" for k, v in values.items()),
               echo=False)


def save_iteration_grids(args, logger, result, iteration, epoch):
    samples = os.path.join(args.save_dir, "samples")
    save_grid(result.x_q, os.path.join(samples, f"x_q_{epoch}_{iteration:08d}.png"))
    logger.image("samples/x_q", result.x_q, iteration)
    plot_chain_trace(torch.stack(result.trace), os.path.join(samples, f"chains_{epoch}_{iteration:08d}.png"),
                     f"iteration {iteration}: the {args.n_steps} steps of this batch's chains")


def long_run(parts, logger, iteration, epoch):
    """Long-run chains from uniform noise: a grid of where they end, their energy traces, and the end values."""
    args, shape, device = parts.args, parts.image_shape, parts.device
    x, trace = long_run_chains(parts.model, lambda n: uniform_start(n, shape, device), args.long_run_n,
                               args.long_run_steps, args.sampler, args.sgld_lr, args.sgld_std, args.n_leapfrog,
                               args.seed, device, parts.precision.sampler_autocast, args.anneal_factor,
                               args.time_cutoff)
    values = chain_summary(trace, "long_run")
    logger.metrics(iteration, epoch=epoch, **values)
    logger.log(f"long-run chains ({args.long_run_steps} steps) after iteration {iteration}: "
               + " ".join(f"{k}={v:.4f}" for k, v in values.items()), echo=False)
    if not args.novis:
        out = os.path.join(args.save_dir, "long_run")
        os.makedirs(out, exist_ok=True)
        save_grid(x, os.path.join(out, f"long_run_{iteration:08d}.png"))
        logger.image("samples/long_run", x, iteration)
        plot_chain_trace(trace, os.path.join(out, f"long_run_{iteration:08d}_chains.png"),
                         f"{args.long_run_n} chains from uniform noise, {args.long_run_steps} steps, after iteration {iteration}")


def evaluate_epoch(parts, state, logger, epoch):
    """Validation/test metrics, best_valid_ckpt.pt, and the epoch's sample grids (rank 0's numbers decide)."""
    args, model, data, device, dist = parts.args, parts.model, parts.data, parts.device, parts.dist
    results = {}
    if data.valid is not None:
        results["valid/loss"], results["valid/acc"], results["valid/f"] = evaluate_classifier(model, data.valid, device)
    if data.test is not None:
        results["test/loss"], results["test/acc"], results["test/f"] = evaluate_classifier(model, data.test, device)
        if parts.ema is not None:  # the averaged weights, which evaluation uses by default
            results["test_ema/loss"], results["test_ema/acc"], results["test_ema/f"] = \
                evaluate_classifier(parts.ema.model, data.test, device)
    results = broadcast_object(results, dist)
    if results:
        logger.metrics(state.iteration, epoch=epoch, **results)
        logger.log(f"epoch {epoch}: " + " ".join(f"{k}={v:.4f}" for k, v in results.items()))
    if data.valid is not None and parts.plan.classifying and results["valid/acc"] > state.best_valid_acc:
        state.best_valid_acc = results["valid/acc"]
        state.save("best_valid_ckpt.pt")
    if args.novis or parts.buffer is None:
        return
    # on every rank: training's chains run in train mode, where SyncBatchNorm all-gathers its statistics
    cond = class_conditional_grid(parts) if args.plot_cond else None
    if not dist.is_main:
        return
    with main_only(dist, "the epoch's sample grids"):
        if args.plot_uncond:
            save_grid(parts.buffer.samples[:100], os.path.join(args.save_dir, "samples", f"buffer_{epoch}.png"))
            logger.image("samples/buffer", parts.buffer.samples[:64], state.iteration)
        if cond is not None:
            save_grid(cond, os.path.join(args.save_dir, "samples", f"cond_{epoch}.png"), nrow=10)
            logger.image("samples/class_conditional", cond, state.iteration)


def class_conditional_grid(parts):
    """Ten chains per class, run as training's chains run (the model, its mode and weights), the model's state
    (BatchNorm statistics, spectral-norm vectors) unchanged; with a separate energy head the class enters through
    the classifier's log p(y|x)."""
    args, device = parts.args, parts.device
    y = torch.arange(parts.data.n_classes, device=device).repeat_interleave(10)
    x0 = parts.precision.layout(parts.start_fn(len(y), y))
    chains = parts.ema.model if args.ema_chains else parts.model
    train = chains_in_train_mode(args.sampler, parts.plan.generative, args.ema_chains)
    with frozen_model_state(chains, train=train) as chains, parts.precision.sampler_autocast():
        x, _ = run_sampler(args.sampler, class_conditional(chains), x0, args.n_steps * 10, args.sgld_lr,
                           args.sgld_std, y=y, n_leapfrog=args.n_leapfrog, anneal_factor=args.anneal_factor,
                           time_cutoff=args.time_cutoff)
    return x


@torch.no_grad()
def buffer_classes(parts):
    """The class of every buffer image by the classifier evaluation uses, the --ema average when there is one (eval
    mode, batches of 500; the model's state unchanged)."""
    samples, layout = parts.buffer.samples, parts.precision.layout
    classifier = parts.ema.model if parts.ema is not None else parts.model
    with frozen_model_state(classifier, train=False) as model:
        return torch.cat([model.classify(layout(samples[i:i + 500])).argmax(1) for i in range(0, len(samples), 500)])


def buffer_diagnosis(parts, classes):
    """The buffer's class shares (by the classifier) and its chains' ages, as metrics."""
    census = buffer_census(classes, parts.buffer.steps, parts.plan.n_classes)
    values = {"buffer/mean_steps": census["mean_steps"], "buffer/never_sampled": census["never_sampled"]}
    if parts.plan.classifying:
        values.update({"buffer/min_class_share": census["min_class_share"],
                       "buffer/max_class_share": census["max_class_share"],
                       **{f"buffer/class_share/{c}": v for c, v in enumerate(census["class_shares"])}})
    return values


def fid_of_buffer(parts, logger, iteration, epoch):
    """FID/KID of a seeded random --fid_n of the buffer (per class predicted by the classifier too, when one is
    trained) and the buffer's diagnosis; no draw from the training RNG, so the run is unchanged."""
    samples = parts.buffer.samples
    pick = torch.randperm(len(samples), generator=torch.Generator().manual_seed(parts.args.seed + iteration))
    pick = pick[:parts.args.fid_n].to(samples.device)
    classes = buffer_classes(parts) if parts.plan.classifying else torch.zeros(len(samples), dtype=torch.long,
                                                                                device=samples.device)
    scores = parts.fid.score(samples[pick].cpu(), classes[pick].cpu().numpy() if parts.plan.classifying else None)
    values = {"fid/fid": scores["fid"], "fid/kid": scores["kid_mean"], "fid/kid_std": scores["kid_std"],
              **buffer_diagnosis(parts, classes),
              **{f"fid/per_class/{c}": v["fid"] for c, v in scores.get("per_class", {}).items() if v["fid"] is not None}}
    logger.metrics(iteration, epoch=epoch, **values)
    logger.log(f"epoch {epoch}: FID {scores['fid']:.2f}, KID {scores['kid_mean']:.4f} of {scores['n_samples']} "
               f"buffer images ({scores['convention']}; reference {scores['reference']})")


def finish_iteration(parts, state, logger, bar, result, iteration, epoch, lr, epoch_end, ckpt_due):
    """Everything after a healthy step, in order: metrics row, sample grids, long-run probe, end-of-epoch
    evaluation and checkpoints."""
    args, main = parts.args, parts.dist.is_main
    if iteration % args.print_every == 0:
        log_iteration(parts, logger, bar, result, iteration, epoch, lr)
    if parts.plan.sampling and not args.novis and iteration % args.plot_every == 0 and main:
        with main_only(parts.dist, "the iteration's sample grids"):
            save_iteration_grids(args, logger, result, iteration, epoch)
    if parts.plan.sampling and args.long_run_every and state.iteration % args.long_run_every == 0 and main:
        with main_only(parts.dist, "the long-run probe"):
            long_run(parts, logger, state.iteration, epoch)
    if epoch_end and (epoch % args.eval_every == 0 or epoch == args.n_epochs - 1):
        evaluate_epoch(parts, state, logger, epoch)
    if epoch_end and parts.fid is not None and (epoch % args.fid_every == 0 or epoch == args.n_epochs - 1):
        with main_only(parts.dist, "--fid_every"):  # parts.fid exists on rank 0 alone
            fid_of_buffer(parts, logger, state.iteration, epoch)
    if epoch_end and epoch % args.ckpt_every == 0:
        state.save(f"ckpt_{epoch}.pt")
    if ckpt_due:
        state.save()


def final_numbers(save_dir, state):
    """The run's last logged loss and evaluation results, for TensorBoard's hparams view."""
    final = {"iterations": state.iteration}
    for row in read_metrics(os.path.join(save_dir, "metrics.jsonl")):
        final.update({k: v for k, v in row.items() if k.startswith(("loss/", "test/", "valid/"))})
    return final
