"""Deliberate breaks: each is applied to a fresh copy of the working tree and must make its named tests fail.

A break that its tests do not catch means those tests cannot fail on the bug they guard against. Usage:
    python bench/mutants.py                      # every break, two at a time (about N x 30 s on 2 cores)
    python bench/mutants.py --only fid_cache_key init_data_first
    python bench/mutants.py --list
Exit status 0 only when every break run was caught.
"""
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from utils.errors import ArgumentParser, positive_int, run_cli  # noqa: E402


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # file to break, relative to the repository root
    edits: tuple  # (old, new) pairs; each `old` must occur exactly once in the file
    tests: tuple  # pytest node ids that must fail on the broken copy


M = "tests/test_measures.py::"
P = "tests/test_precision.py::"
E = "tests/test_ema.py::"
C = "tests/test_chain_free.py::"
D = "tests/test_device_data.py::"
K = "tests/test_compile.py::"
EM = "tests/test_energy_matching.py::"
CL = "tests/test_collectives.py::"
R = "tests/test_restoration.py::"
MUTANTS = [
    # the breaks first checked by hand (issue 14 and after), now kept here
    Mutant("hmc_accepts_every_proposal", "utils/sampling/samplers.py",
           (("log_alpha = (fy - _sum_dims(p ** 2) / 2) - (f - _sum_dims(p0 ** 2) / 2)",
             "log_alpha = torch.full_like(f, float('inf'))"),),
           ("tests/test_samplers.py::test_hmc_is_exact",)),
    Mutant("langevin_dispatched_to_langevin_exact", "utils/sampling/samplers.py",
           (('    if name == "langevin":\n        return langevin_sample(neg_energy, x, n_steps, step_size, noise_std, '
             'bounds, trace)',
             '    if name == "langevin":\n        return langevin_exact_sample(neg_energy, x, n_steps, step_size, '
             'bounds, trace)'),),
           ("tests/test_samplers.py::test_run_sampler_dispatches_each_name_to_its_sampler",)),
    Mutant("sgld_uses_the_gradient_sign", "utils/sampling/sgld.py",
           (("step_size * grad.clamp(-grad_clip, grad_clip)", "step_size * grad.sign()"),),
           ("tests/test_sampling.py::test_one_sgld_step_is_the_upstream_update",)),
    Mutant("uniform_start_is_zeros", "utils/sampling/buffer.py",
           (("return torch.rand(n, *image_shape, device=device, generator=generator) * 2 - 1",
             "return torch.zeros(n, *image_shape, device=device)"),),
           ("tests/test_sampling.py::test_uniform_start_range",)),
    Mutant("gcl_adds_the_marginal_term", "utils/training/objectives.py",
           (("loss = loss - self.gamma * contrastive_divergence(", "loss = loss + self.gamma * contrastive_divergence("),),
           ("tests/test_objectives.py::test_gcl_is_joint_minus_gamma_marginal",)),
    Mutant("data_scaled_to_unit_range", "utils/data.py",
           (("steps += [T.ToTensor(), T.Normalize((0.5,) * ch, (0.5,) * ch)]", "steps += [T.ToTensor()]"),),
           ("tests/test_data.py::test_fashion_mnist_idx_layout_is_read_by_torchvision",)),
    Mutant("spectral_norm_on_linear_only", "models/__init__.py",
           (("if isinstance(module, (nn.Conv2d, nn.Linear)):", "if isinstance(module, nn.Linear):"),),
           ("tests/test_models.py::test_spectral_norm_bounds_every_layer",)),
    Mutant("l2_coefficient_ignored", "utils/training/objectives.py",
           (("return alpha * ((f_data ** 2).mean() + f_samples.mean() ** 2)",
             "return 0 * alpha * ((f_data ** 2).mean() + f_samples.mean() ** 2)"),),
           ("tests/test_objectives.py::test_marginal_objective_with_upstream_regulariser",)),
    Mutant("calibration_with_15_bins", "utils/evaluation/classifier.py",
           (("CALIBRATION_BINS = 20", "CALIBRATION_BINS = 15"),),
           ("tests/test_eval_e2e.py::test_modes_write_results",)),
    Mutant("fid_cache_never_read", "utils/fid.py",
           (("        if os.path.exists(self.cache_path):\n            z = np.load",
             "        if False:\n            z = np.load"),),
           (M + "test_fid_cache_is_keyed_by_the_exact_reference",
            "tests/test_eval_e2e.py::test_fid_of_buffer_with_cached_reference")),
    Mutant("inception_bn_shift_negated", "utils/fid.py",
           (('state[f"{ours}.bn.bias"] = u["beta"]', 'state[f"{ours}.bn.bias"] = -u["beta"]'),),
           ("tests/test_fid.py::test_converted_weights_give_fid_helpers_own_features",)),
    Mutant("kid_keeps_the_diagonal", "utils/fid.py",
           (("mmd = ((kaa.sum() - np.trace(kaa)) + (kbb.sum() - np.trace(kbb))) / (m * (m - 1))",
             "mmd = (kaa.sum() + kbb.sum()) / (m * (m - 1))"),),
           ("tests/test_metrics.py::test_kid_is_zero_within_its_spread_on_one_distribution_and_large_across_two",)),
    Mutant("bench_counts_two_images", "bench/train_step.py", (("model(torch.zeros(1, *shape", "model(torch.zeros(2, *shape"),),
           ("tests/test_bench.py::test_bench_cpu_smoke",)),
    Mutant("temp_file_left_after_a_failed_write", "utils/checkpoint.py",
           (("        if tmp is not None and os.path.exists(tmp):\n            os.unlink(tmp)\n        if isinstance",
             "        if False:\n            os.unlink(tmp)\n        if isinstance"),),
           ("tests/test_reliability.py::test_full_disk_leaves_the_run_untouched",
            "tests/test_reliability.py::test_disk_full_mid_run_keeps_earlier_files_and_resumes")),
    Mutant("inception_score_unshuffled", "utils/fid.py", (("shuffle=True, rng_seed=2020", "shuffle=False, rng_seed=2020"),),
           ("tests/test_metrics.py::test_inception_score_closed_forms_and_order",)),
    Mutant("overwrite_keeps_the_old_files", "utils/run_dir.py",
           (("os.rename(os.path.join(save_dir, name), os.path.join(archive, name))", "pass"),),
           ("tests/test_run_safety.py::test_overwrite_archives_the_old_run_and_resume_reads_only_the_new",)),
    Mutant("no_run_lock", "utils/run_dir.py", (("fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)", "pass"),),
           ("tests/test_run_safety.py::test_a_second_writer_stops_naming_the_holder",)),
    Mutant("class_grids_bypass_the_sampler", "utils/training/reporting.py",
           (("x, _ = run_sampler(args.sampler, class_conditional(model), x0,",
             'x, _ = run_sampler("sgld", class_conditional(model), x0,'),),
           ("tests/test_run_safety.py::test_class_conditional_grids_use_the_runs_sampler",)),
    Mutant("rollback_keeps_the_lr", "utils/training/guard.py",
           (("state.lr_scale * args.rollback_lr_factor, state.rollbacks + 1", "state.lr_scale, state.rollbacks + 1"),),
           ("tests/test_training_pieces.py::test_guard_rolls_back_to_the_last_checkpoint_with_a_smaller_lr",)),
    Mutant("restore_skips_the_rng_state", "utils/training/state.py",
           (('        set_rng_state(ckpt["rng"][self.dist.rank])', "        pass"),),
           ("tests/test_training_pieces.py::test_checkpoint_state_round_trip",)),
    Mutant("optimizer_step_skipped", "utils/training/step.py", (("    parts.optim.step()", "    pass"),),
           ("tests/test_training_pieces.py::test_classifier_steps_lower_the_loss",)),
    Mutant("majem_launcher_without_uncond", "scripts/majem_cifar10.sh", (("  --uncond \\\n", ""),),
           ("tests/test_upstream.py::test_launcher_passes_the_published_values",)),
    Mutant("test_clf_refines_in_train_mode", "utils/evaluation/context.py",
           (("        def upstream(xb):\n            for _ in range(self.args.n_steps):",
             "        def upstream(xb):\n            self.model.train()\n            for _ in range(self.args.n_steps):"),),
           ("tests/test_upstream.py::test_test_clf_refinement_leaves_batchnorm_statistics_alone",)),
    Mutant("px_only_epoch_over_the_px_loader", "utils/training/setup.py",
           (("iters_per_epoch = len(data.labelled) or len(data.px)", "iters_per_epoch = len(data.px)"),),
           ("tests/test_upstream.py::test_epoch_length_and_lr_schedule_are_upstreams",)),
    Mutant("upstream_keys_not_renamed", "utils/upstream.py",
           ((".replace('shortcut.0.', 'shortcut.')", ""),),
           ("tests/test_upstream.py::test_upstream_weights_give_the_same_outputs",)),
    Mutant("run_directory_made_before_the_flags_are_checked", "utils/training/setup.py",
           (("    plan = make_plan(args, data.n_classes, dist_info.world)\n", ""),
            ("    lock, logger = open_run_dir(args, dist_info, on_main)\n",
             "    lock, logger = open_run_dir(args, dist_info, on_main)\n"
             "    plan = make_plan(args, data.n_classes, dist_info.world)\n")),
           ("tests/test_cli_errors.py::test_bad_input",)),
    # issue 22: evaluation and sampling measure what they say
    Mutant("fid_cache_key", "utils/fid.py",
           (('"seed": seed,\n', ""), ('"images": hashlib.sha1(images.numpy().tobytes()).hexdigest(),', "")),
           (M + "test_fid_cache_is_keyed_by_the_exact_reference",)),
    Mutant("fid_cache_unchecked", "utils/fid.py", (('if "key" in z and str(z["key"]) == self.key:', "if True:"),),
           (M + "test_fid_cache_is_keyed_by_the_exact_reference",)),
    Mutant("init_data_first", "utils/sampling/starts.py",
           (("pick = torch.randperm(len(ds), generator=torch.Generator().manual_seed(args.seed))[:args.buffer_size]",
             "pick = torch.arange(min(len(ds), args.buffer_size))"),),
           (M + "test_init_data_starts_from_a_seeded_random_subset",)),
    Mutant("frozen_batchnorm_only", "utils/sampling/frozen.py",
           (("model.load_state_dict(saved)",
             "model.load_state_dict({k: v for k, v in saved.items() if 'running' in k or 'num_batches' in k}, "
             "strict=False)"),),
           (M + "test_frozen_model_state_restores_every_buffer_and_the_mode",
            M + "test_project_variant_leaves_the_model_state_bit_identical")),
    Mutant("persistent_chains_unrestored", "utils/evaluation/context.py",
           (('with frozen_model_state(self.model) if a.variant == "project" else upstream_train_mode(self.model):',
             "with upstream_train_mode(self.model):"),),
           (M + "test_project_variant_leaves_the_model_state_bit_identical",)),
    Mutant("gen_unconditional", "utils/evaluation/generative.py", (("y = ev.chain_labels(n)", "y = None"),),
           (M + "test_new_chains_of_a_conditional_run_are_drawn_given_classes",)),
    Mutant("chain_length_one_rank", "utils/evaluation/context.py",
           (("draws = iterations * world * train_args", "draws = iterations * train_args"),),
           (M + "test_chain_length_counts_every_rank",)),
    Mutant("cond_grids_eval_mode", "utils/training/reporting.py",
           (("with frozen_model_state(model, train=parts.plan.generative),",
             "with frozen_model_state(model, train=False),"),),
           (M + "test_class_conditional_grids_during_training_sample_as_training_chains",)),
    Mutant("persistent_steps_uncounted", "utils/evaluation/context.py",
           (("steps[idx] = torch.where(fresh, 0, steps[idx]) + a.n_steps", "steps[idx] = a.n_steps"),),
           (M + "test_upstream_persistent_chains_report_untouched_starts",)),
    Mutant("never_moved_no_warning", "utils/evaluation/generative.py",
           (("if never > NEVER_MOVED_WARNING * len(steps):", "if False:"),),
           (M + "test_upstream_persistent_chains_report_untouched_starts",)),
    Mutant("actnorm_sync_every_forward", "models/norms.py",
           (("if self.training and not self._known_initialized:", "if self.training:"),),
           (M + "test_actnorm_reads_its_flag_from_the_device_once",)),
    Mutant("stop_all_reduce_every_iteration", "utils/training/stop.py",
           (("return sync_point and bool(any_rank(", "return bool(any_rank("),),
           (M + "test_stop_request_is_read_across_ranks_only_at_sync_points",)),
    Mutant("progress_every_tenth_second", "utils/progress.py",
           (('kwargs.setdefault("mininterval", LOG_INTERVAL_S)', 'kwargs.setdefault("mininterval", 0.1)'),),
           (M + "test_progress_bars_keep_a_log_file_small",)),
    Mutant("quality_table_one_budget", "bench/quality.py",
           (("{budget}; {seeds}", "{a.minutes:g} min of training each; {seeds}"),),
           (M + "test_quality_table_states_each_runs_own_budget",)),
    Mutant("quality_spread_shows_first_seed", "bench/quality.py",
           (('return f"{fmt.format(statistics.mean(values))} (', 'return f"{fmt.format(values[0])} ('),),
           (M + "test_quality_table_gives_mean_and_spread_over_seeds",)),
    Mutant("quality_variant_flags_overridden_by_recipe", "bench/quality.py",
           (("RECIPES[words[0]][1] + words[1:])", "words[1:] + RECIPES[words[0]][1])"),),
           (M + "test_quality_variant_is_its_recipe_with_flags_that_override",)),
    Mutant("docs_machine_path", "docs/quality/recipes.md",
           (("scored run quickstart_", "scored run /tmp/qs-check/experiment/quickstart_"),),
           (M + "test_no_committed_file_holds_a_path_of_the_machine_that_made_it",)),
    # issue 23: precision where it matters
    Mutant("heads_in_bf16", "models/energy.py",
           (("        with torch.autocast(h.device.type, enabled=False):\n            h = h.float()\n            logits",
             "        if True:\n            logits"),),
           (P + "test_energies_and_every_loss_term_are_fp32_under_autocast",
            P + "test_metropolis_decisions_under_autocast_equal_fp32_near_the_threshold")),
    Mutant("input_gradient_backward_in_bf16", "utils/sampling/sgld.py",
           (("    with torch.autocast(x.device.type, enabled=False):\n        g, = torch.autograd.grad(f.sum(), x)",
             "    if True:\n        g, = torch.autograd.grad(f.sum(), x)"),),
           (P + "test_metropolis_decisions_under_autocast_equal_fp32_near_the_threshold",)),
    Mutant("starts_drawn_in_bf16", "utils/training/step.py",
           (("        x0, idx, steps = buffer.draw(args.batch_size, parts.start_fn, args.reinit_freq, y_q)",
             "        with precision.loss_autocast():\n"
             "            x0, idx, steps = buffer.draw(args.batch_size, parts.start_fn, args.reinit_freq, y_q)"),),
           (P + "test_fresh_starts_are_fp32_and_equal_the_fp32_draw",)),
    Mutant("chains_in_the_loss_precision", "utils/training/step.py",
           (("    with precision.sampler_autocast(), weights_frozen(model):",
             "    with precision.loss_autocast(), weights_frozen(model):"),),
           (P + "test_chains_in_fp32_equal_the_fp32_paths_chains",)),
    Mutant("eval_ignores_the_runs_precision", "utils/evaluation/context.py",
           (("recorded_policy(self.train_args, device,", "recorded_policy({}, device,"),),
           (P + "test_a_run_records_its_policy_and_eval_samples_with_it",)),
    # issue 24: an average of the weights, sharpness-aware minimisation
    Mutant("ema_never_updated", "utils/training/step.py", (("        parts.ema.update(model)", "        pass"),),
           (E + "test_average_equals_the_hand_computed_one",)),
    Mutant("ema_buffers_not_averaged", "utils/training/ema.py",
           (("floats = [(a, m) for a, m in pairs if a.is_floating_point()]",
             "floats = [(a, m) for a, m in pairs if isinstance(a, torch.nn.Parameter)]"),),
           (E + "test_average_equals_the_hand_computed_one",)),
    Mutant("ema_restarted_on_resume", "utils/training/state.py",
           (('self.ema.load_state_dict(ckpt["ema_state_dict"])', "self.ema.reset_to(self.model)"),),
           (E + "test_resumed_average_is_bit_identical",)),
    Mutant("eval_ignores_the_average", "utils/evaluation/context.py",
           (('key = "ema_state_dict" if chosen_weights(ckpt, weights, path) == "ema" else "model_state_dict"',
             'key = "model_state_dict"'),),
           (E + "test_eval_uses_the_average_unless_told_otherwise",)),
    Mutant("sam_without_the_ascent_step", "utils/training/sam.py",
           (("p.add_((p.abs() if self.adaptive else 1.0) * s * scale)", "p.add_(0 * s)"),),
           ("tests/test_sam.py::test_one_step_equals_the_two_step_formula",)),
    Mutant("sam_steps_from_the_perturbed_weights", "utils/training/sam.py", (("            p.copy_(saved)", "            pass"),),
           ("tests/test_sam.py::test_one_step_equals_the_two_step_formula",)),
    Mutant("sam_momentum_lost_on_resume", "utils/training/sam.py",
           (('        self.base.load_state_dict(state["base"])', "        pass"),),
           ("tests/test_sam.py::test_resumed_sam_run_is_bit_identical",)),
    Mutant("sadajem_launcher_without_sam", "scripts/sadajem_cifar10.sh", (("--optimizer sam", "--optimizer sgd"),),
           ("tests/test_upstream.py::test_launcher_passes_the_published_values",)),
    # issue 25: the faster FID and the in-process script runner
    Mutant("fid_without_the_cross_term", "utils/fid.py",
           (("np.trace(sigma_b) - 2 * tr_covmean", "np.trace(sigma_b) - tr_covmean"),),
           ("tests/test_fid.py::test_frechet_distance_equals_pytorch_fids_routine",)),
    Mutant("fid_trace_of_the_product_not_its_root", "utils/fid.py",
           (("tr_covmean = np.sqrt(np.clip(", "tr_covmean = (np.clip("),),
           ("tests/test_fid.py::test_frechet_distance_equals_pytorch_fids_routine",)),
    Mutant("in_process_runs_ignore_the_exit_code", "tests/conftest.py",
           (("                code = e.code if isinstance(e.code, int) else int(e.code is not None)",
             "                code = 0"),),
           (C + "test_chain_free_flags_are_checked", "tests/test_reliability.py::test_divergence_gives_up_after_max_rollbacks")),
    # issue 26: each chain-free objective without its key term
    Mutant("dsm_without_the_noise_target", "utils/training/chain_free.py",
           (("return 0.5 * _per_image((sigma * s + eps) ** 2).mean(), f", "return 0.5 * _per_image((sigma * s) ** 2).mean(), f"),),
           (C + "test_dsm_equals_its_formula", C + "test_dsm_with_a_small_sigma_recovers_the_precision")),
    # issue 34: the per-pixel scale of dsm and ssm
    Mutant("sm_per_pixel_ignored", "utils/training/chain_free.py",
           (("return loss / x[0].numel() if self.per_pixel else loss", "return loss"),),
           (C + "test_the_per_pixel_scale_divides_the_per_image_loss_by_the_values_per_image",)),
    Mutant("sm_scale_flag_not_passed", "utils/training/setup.py",
           (('per_pixel=args.sm_scale == "pixel"', "per_pixel=False"),),
           (C + "test_sm_scale_pixel_reaches_the_training_loss",)),
    Mutant("score_levels_denoiser_step_sigma", "bench/score_levels.py",
           (("denoised = noisy + sigma ** 2 * s", "denoised = noisy + sigma * s"),),
           (C + "test_score_levels_of_the_exact_gaussian_score_and_of_a_zero_score",)),
    Mutant("ssm_without_the_hessian_term", "utils/training/chain_free.py",
           (("return (_per_image(hv * v) + 0.5 * sv ** 2).mean(), f", "return (0.5 * sv ** 2).mean(), f"),),
           (C + "test_ssm_equals_its_formula", C + "test_ssm_recovers_the_precision")),
    Mutant("nce_without_the_noise_term", "utils/training/chain_free.py",
           (("loss = -(F.logsigmoid(g_data).mean() + ratio * F.logsigmoid(-g_noise).mean())",
             "loss = -F.logsigmoid(g_data).mean()"),),
           (C + "test_nce_equals_its_formula", C + "test_nce_with_a_gaussian_noise_recovers_the_precision_and_log_z")),
    Mutant("nce_noise_density_ignored", "utils/training/chain_free.py",
           (("g_data = log_p_data - log_q_data - math.log(ratio)", "g_data = log_p_data - math.log(ratio)"),
            ("g_noise = log_p_noise - log_q_noise - math.log(ratio)", "g_noise = log_p_noise - math.log(ratio)")),
           (C + "test_nce_with_a_gaussian_noise_recovers_the_precision_and_log_z",)),
    Mutant("annealed_schedule_restarts_each_piece", "utils/sampling/samplers.py",
           (("    first, total = window or (0, n_steps)", "    first, total = 0, n_steps"),),
           (C + "test_annealed_langevin_shrinks_its_moves_and_samples_a_gaussian",)),
    Mutant("chain_free_run_keeps_a_buffer", "utils/training/plan.py",
           (("sampling=(generative and not chain_free) or args.thermo", "sampling=generative or args.thermo"),),
           (C + "test_a_chain_free_run_resumes_bit_identically_and_samples",)),
    # issue 31: first contact
    Mutant("download_never_tried", "utils/data.py",
           (("        with network_timeout():\n            return make(True)",
             "        with network_timeout():\n            raise RuntimeError(\"no download\")"),),
           ("tests/test_download.py::test_quickstart_data_step_downloads_fashion_mnist_when_no_route_has_it",
            "tests/test_download.py::test_one_center_and_train_download_cifar10_once")),
    Mutant("download_before_the_local_routes", "utils/data.py",
           (("    try:\n        return make(False)\n", "    try:\n        return make(True)\n"),),
           ("tests/test_download.py::test_debian_package_is_used_before_any_download",
            "tests/test_download.py::test_quickstart_data_step_downloads_fashion_mnist_when_no_route_has_it")),
    Mutant("launchers_skip_the_venv", "scripts/common.sh",
           (('  elif [ -x "${VENV:-.venv}/bin/python" ]; then', "  elif false; then"),),
           ("tests/test_scripts.py::test_launcher_help_uses_the_venv_when_path_python_lacks_torch",)),
    Mutant("help_shows_empty_defaults", "utils/errors.py",
           (("        if empty or not action.option_strings", "        if not action.option_strings"),),
           ("tests/test_help.py::test_help_shows_no_empty_default_and_ends_with_an_example",)),
    Mutant("class_conditional_ignores_the_class", "models/energy.py",
           (("        return f + logits.log_softmax(1).gather(1, y[:, None]).squeeze(1), logits",
             "        return f, logits"),),
           ("tests/test_models.py::test_class_conditional_energy_of_a_separate_head_adds_log_p_y_given_x",)),
    Mutant("wandb_gets_no_scalars", "utils/run_dir.py",
           (("            self.mirror.scalars(step, values)", "            pass"),),
           ("tests/test_wandb.py::test_offline_wandb_run_holds_the_logged_metrics_images_and_flags",)),
    # issue 32: data on the device, the whole step compiled, no host sync
    Mutant("device_images_not_normalised", "utils/augment.py",
           (("    return (images.float().div(255) - 0.5) / 0.5", "    return images.float().div(255)"),),
           (D + "test_uint8_tensors_are_what_totensor_gives",)),
    Mutant("device_crop_never_reaches_the_last_offset", "utils/augment.py",
           (("    top = torch.randint(0, 2 * pad + 1, (n,), device=x.device)",
             "    top = torch.randint(0, 2 * pad, (n,), device=x.device)"),),
           (D + "test_random_crop_flip_has_torchvisions_distribution",)),
    Mutant("device_flips_rare", "utils/augment.py",
           (("torch.rand(n, device=x.device) < 0.5 if flip", "torch.rand(n, device=x.device) < 0.3 if flip"),),
           (D + "test_random_crop_flip_has_torchvisions_distribution",)),
    Mutant("device_stream_resumes_in_epoch_0", "utils/training/streams.py",
           (("        self.epoch, self.batch, self._order = epoch, batch, None",
             "        self.epoch, self.batch, self._order = 0, batch, None"),),
           (D + "test_device_stream_gives_the_dataloader_streams_batches_and_resumes",)),
    Mutant("gm_class_reads_the_labels_on_the_host", "utils/gaussian.py",
           (("        v = self.mean[y]\n", "        v = self.mean[y.tolist()]\n"),),
           (D + "test_per_class_draws_read_nothing_back_to_the_host",)),
    Mutant("mixture_rows_in_class_order", "utils/gaussian.py",
           (("        return v[torch.randperm(classes * per, device=self.mean.device, generator=generator)[:n]]",
             "        return v[:n]"),),
           (D + "test_each_row_of_a_mixture_draw_has_a_uniform_class",)),
    Mutant("chains_compute_weight_gradients", "utils/training/step.py",
           (("    with precision.sampler_autocast(), weights_frozen(model):", "    with precision.sampler_autocast():"),),
           (K + "test_chains_run_with_frozen_weights_and_training_gets_its_gradients",
            K + "test_no_recompilation_after_warm_up_over_epochs_with_checkpoints_evaluation_and_lr_changes")),
    Mutant("average_compiled_before_it_is_copied", "utils/training/setup.py",
           (("    ema = WeightAverage(model, args.ema) if args.ema > 0 else None\n    if args.compiled:",
             "    if args.compiled:\n        compile_backbone(model)\n"
             "    ema = WeightAverage(model, args.ema) if args.ema > 0 else None\n    if False:"),),
           (K + "test_the_compiled_average_computes_with_its_own_weights",)),
    Mutant("top_level_call_compiled", "models/energy.py",
           (("    model.f.compile(backend=COMPILE_BACKEND)", "    model.compile(backend=COMPILE_BACKEND)"),),
           (K + "test_compiled_energies_stay_fp32_under_bf16_autocast",)),
    # issue 33: JEM's sampler, --act, chains as trained, the buffer's diagnosis
    Mutant("jem_sampler_clamps_x", "utils/sampling/samplers.py",
           (("        return langevin_sample(neg_energy, x, n_steps, step_size, noise_std, None, trace)",
             "        return langevin_sample(neg_energy, x, n_steps, step_size, noise_std, bounds, trace)"),),
           ("tests/test_training_pieces.py::test_jem_sampler_is_jems_sample_q",)),
    Mutant("jem_sampler_in_train_mode", "utils/sampling/samplers.py",
           (("    return generative and not ema_chains and sampler not in EVAL_MODE_SAMPLERS",
             "    return generative and not ema_chains"),),
           ("tests/test_training_pieces.py::test_jem_sampler_is_jems_sample_q",
            "tests/test_chains_as_trained.py::test_new_chains_use_the_weights_and_mode_of_training_chains")),
    Mutant("class_grids_ignore_the_chains_mode", "utils/training/reporting.py",
           (("        train = chains_in_train_mode(args.sampler, parts.plan.generative, args.ema_chains)",
             "        train = parts.plan.generative"),),
           ("tests/test_measures.py::test_class_conditional_grids_during_training_sample_as_training_chains",)),
    Mutant("cnn_ignores_act", "models/small_cnn.py",
           (("make_norm(norm, chans[i + 1]), make_act(act)]", "make_norm(norm, chans[i + 1]), nn.LeakyReLU(0.2)]"),),
           ("tests/test_models.py::test_every_net_takes_the_activation_it_is_given",)),
    Mutant("eval_builds_the_published_act", "utils/evaluation/context.py",
           (('log_normaliser="log_z" in ckpt[key], act=arch["act"])', 'log_normaliser="log_z" in ckpt[key], act=None)'),),
           ("tests/test_chains_as_trained.py::test_eval_rebuilds_the_recorded_activation",)),
    Mutant("eval_chains_sample_the_online_weights", "utils/evaluation/context.py",
           (('    return "ema" if train_args.get("ema_chains") and ckpt.get("ema_state_dict") is not None else "online"',
             '    return "online"'),),
           ("tests/test_chains_as_trained.py::test_new_chains_use_the_weights_and_mode_of_training_chains",
            "tests/test_chains_as_trained.py::test_new_chains_of_an_ema_chains_run_are_the_averages_in_eval_mode")),
    Mutant("eval_chains_mode_ignores_ema_chains", "utils/evaluation/context.py",
           (('            t.get("sampler", "sgld"), generative, t.get("ema_chains", False)))',
             '            t.get("sampler", "sgld"), generative, False))'),),
           ("tests/test_chains_as_trained.py::test_new_chains_of_an_ema_chains_run_are_the_averages_in_eval_mode",)),
    Mutant("buffer_steps_kept_on_restart", "utils/sampling/buffer.py",
           (("        return starts, idx, torch.where(fresh, 0, self.steps[idx])",
             "        return starts, idx, self.steps[idx]"),),
           ("tests/test_sampling.py::test_buffer_counts_the_steps_each_entry_ran_since_its_start",)),
    Mutant("buffer_steps_not_checkpointed", "utils/training/state.py",
           (('"replay_buffer": samples, "buffer_steps": steps,', '"replay_buffer": samples, "buffer_steps": None,'),),
           ("tests/test_training_pieces.py::test_checkpoint_state_round_trip",)),
    Mutant("per_class_reference_in_file_order", "utils/fid.py",
           (("        return dataset_labels(base)[idx].numpy()[self._kept()]",
             "        return dataset_labels(base)[idx].numpy()[:KID_KEEP]"),),
           ("tests/test_fid.py::test_per_class_scores_compare_each_class_with_its_own_reference",)),
    Mutant("cudnn_autotuner_never_on", "utils/device.py",
           (('    on = torch.device(device).type == "cuda"', "    on = False"),),
           ("tests/test_flags.py::test_cudnn_autotuner_on_cuda_only_and_recorded",)),
    Mutant("census_counts_one_class_too_few", "utils/sampling/buffer.py",
           (("    counts = torch.bincount(classes.cpu(), minlength=n_classes)",
             "    counts = torch.bincount(classes.cpu(), minlength=n_classes)[:n_classes - 1]"),),
           ("tests/test_sampling.py::test_buffer_census_counts_classes_and_chain_ages",)),
    Mutant("ot_pairing_identity", "utils/training/energy_matching.py",
           (("    perm[torch.as_tensor(targets)] = torch.as_tensor(starts)",
             "    perm = torch.arange(len(targets))"),),
           (EM + "test_ot_pairing_is_the_minimal_cost_permutation",)),
    Mutant("flow_target_reversed", "utils/training/energy_matching.py",
           (("    mse = ((s - (x1 - x0)) ** 2).flatten(1).mean(1)", "    mse = ((s - (x0 - x1)) ** 2).flatten(1).mean(1)"),),
           (EM + "test_flow_loss_equals_its_formula", EM + "test_energy_matching_transports_a_gaussian_to_the_mixture")),
    Mutant("flow_weight_ignores_cutoff", "utils/training/energy_matching.py",
           (("    if cutoff >= 1:", "    if True:"),),
           (EM + "test_flow_loss_equals_its_formula",)),
    Mutant("cd_trim_drops_lowest_energies", "utils/training/energy_matching.py",
           (("    e_neg = (-f_neg).sort().values", "    e_neg = (-f_neg).sort(descending=True).values"),),
           (EM + "test_trimmed_cd_drops_the_highest_negative_energies_and_is_floored",)),
    Mutant("cd_phase_one_iteration_late", "utils/training/energy_matching.py",
           (("        return self.cd_start is not None and iteration >= self.cd_start",
             "        return self.cd_start is not None and iteration > self.cd_start"),),
           (EM + "test_the_cd_phase_starts_at_its_iteration_and_a_resume_across_it_is_bit_identical",)),
    Mutant("cd_phase_by_call_count", "utils/training/energy_matching.py",
           (("        return self.cd_start is not None and iteration >= self.cd_start",
             "        self.calls = getattr(self, 'calls', -1) + 1\n"
             "        return self.cd_start is not None and self.calls >= self.cd_start"),),
           (EM + "test_the_cd_phase_starts_at_its_iteration_and_a_resume_across_it_is_bit_identical",)),
    Mutant("flow_sampler_noisy_from_the_start", "utils/sampling/samplers.py",
           (("        scale = flow_temperature_scale(k * dt, time_cutoff)", "        scale = 1.0"),),
           (EM + "test_flow_sampler_is_noise_free_before_the_cutoff_and_continues_across_pieces",)),
    Mutant("flow_sampler_window_ignored", "utils/sampling/samplers.py",
           (("    first = window[0] if window else 0", "    first = 0"),),
           (EM + "test_flow_sampler_is_noise_free_before_the_cutoff_and_continues_across_pieces",)),
    Mutant("energy_matching_any_sampler", "utils/training/energy_matching.py",
           (('    if args.sampler != "flow":', '    if False:'),),
           (EM + "test_bad_energy_matching_flags_give_one_line",)),
    Mutant("resume_takes_the_first_gpus_rng", "utils/checkpoint.py",
           (("        cuda = cuda[index] if index < len(cuda) else None", "        cuda = cuda[0]"),),
           ("tests/test_training_pieces.py::"
            "test_checkpoint_rng_holds_the_training_devices_cuda_state_and_resumes_with_fewer_gpus",)),
    Mutant("checkpoint_rng_without_the_device", "utils/training/state.py",
           (("        rngs = gather_objects(rng_state(self._device()), self.dist)",
             "        rngs = gather_objects(rng_state(), self.dist)"),),
           ("tests/test_training_pieces.py::"
            "test_checkpoint_rng_holds_the_training_devices_cuda_state_and_resumes_with_fewer_gpus",)),
    Mutant("exact_fid_keeps_cudnn_tf32", "utils/fid.py",
           (('            return torch.backends.cudnn.flags(enabled=True, allow_tf32=self.precision == "tf32")',
             '            return torch.backends.cudnn.flags(enabled=True, allow_tf32=True)'),),
           ("tests/test_fid.py::test_exact_inception_turns_cudnn_tf32_off_on_cuda",)),
    Mutant("fid_cache_key_without_device", "utils/fid.py",
           (('                               "device": torch.device(device).type}, sort_keys=True)',
             '                               }, sort_keys=True)'),),
           (M + "test_fid_cache_is_keyed_by_the_exact_reference",)),
    Mutant("class_grid_on_rank_0_alone", "utils/training/reporting.py",
           (("    cond = class_conditional_grid(parts) if args.plot_cond else None\n    if not dist.is_main:\n        return\n"
             "    with main_only(dist, \"the epoch's sample grids\"):\n",
             "    if not dist.is_main:\n        return\n    with main_only(dist, \"the epoch's sample grids\"):\n"
             "        cond = class_conditional_grid(parts) if args.plot_cond else None\n"),),
           (CL + "test_every_feature_issues_the_same_collectives_on_every_rank_through_a_stop_and_resume",)),
    Mutant("rank_0_blocks_allow_collectives", "utils/distributed.py",
           (("    if not info.enabled:\n        yield\n        return\n", "    if True:\n        yield\n        return\n"),),
           (CL + "test_a_collective_in_a_rank_0_only_block_raises_instead_of_hanging",)),
    Mutant("stop_signal_kept_by_one_rank", "utils/training/stop.py",
           (("        if signum:\n            self.signum = signum\n", ""),),
           (M + "test_stop_request_is_read_across_ranks_only_at_sync_points",)),
    Mutant("augmentation_not_seeded_per_item", "utils/data.py",
           (("            torch.manual_seed(seed)\n            return self.dataset[index]",
             "            return self.dataset[index]"),),
           (D + "test_dataloader_stream_resumed_mid_epoch_draws_the_same_augmentation",
            "tests/test_train_e2e.py::test_folder_dataset_with_workers_resumed_mid_epoch_equals_uninterrupted")),
    Mutant("item_seeds_not_skipped_on_resume", "utils/data.py",
           (("        seeds = epoch_item_seeds(self.n, self.seed, self.epoch, self.rank, self.world)[self.start:]",
             "        seeds = epoch_item_seeds(self.n, self.seed, self.epoch, self.rank, self.world)"),),
           (D + "test_dataloader_stream_resumed_mid_epoch_draws_the_same_augmentation",
            "tests/test_data.py::test_epoch_sampler_is_a_function_of_seed_and_epoch_and_can_skip")),
    Mutant("sync_bn_allowed_on_the_cpu", "utils/training/setup.py",
           (('    if device.type != "cuda":\n        raise UserError("--sync_bn',
             '    if False:\n        raise UserError("--sync_bn'),),
           ("tests/test_distributed.py::test_sync_bn_on_the_cpu_is_refused_in_one_line",)),
    Mutant("fid_of_one_image_scored", "utils/fid.py",
           (("        if len(samples) < MIN_IMAGES:", "        if len(samples) < 1:"),),
           ("tests/test_fid.py::test_fid_of_fewer_than_two_images_is_refused_in_one_line",)),
    Mutant("npz_key_unchecked", "bench/fid_of_samples.py",
           (('            if "samples" not in z.files:', '            if False:'),),
           ("tests/test_cli_errors.py::test_bench_bad_input",)),
    Mutant("inpaint_mean_ignores_the_known_pixels", "utils/gaussian_posterior.py",
           (("        out_mean[part] = torch.where(known[part], x[part], mean + z @ cov)",
             "        out_mean[part] = torch.where(known[part], x[part], mean + 0 * z @ cov)"),),
           (R + "test_gaussian_conditional_and_posterior_equal_direct_computations",)),
    Mutant("wiener_filter_with_sigma_for_variance", "utils/gaussian_posterior.py",
           (("    chol = torch.linalg.cholesky(cov + sigma ** 2 * torch.eye(", "    chol = torch.linalg.cholesky(cov + sigma * torch.eye("),),
           (R + "test_gaussian_conditional_and_posterior_equal_direct_computations",)),
    Mutant("conditional_sample_is_the_joint_draw", "utils/gaussian_posterior.py",
           (("            out_draw[part] = torch.where(known[part, None], x[part, None], joint + w @ cov)",
             "            out_draw[part] = torch.where(known[part, None], x[part, None], joint)"),),
           (R + "test_gaussian_samples_follow_the_conditional_and_the_mixture_picks_the_evidences_class",)),
    Mutant("mixture_weights_ignore_the_evidence", "utils/evaluation/restoration.py",
           (("    weights = torch.softmax(logliks, 0)", "    weights = torch.full_like(logliks, 1 / len(logliks))"),),
           (R + "test_gaussian_samples_follow_the_conditional_and_the_mixture_picks_the_evidences_class",)),
    Mutant("chains_move_the_known_pixels", "utils/evaluation/restoration.py",
           (("        return model(torch.where(known.to(z.device), kept.to(z.device, z.dtype), z), y)",
             "        return model(z, y)"),),
           (R + "test_chains_on_the_missing_pixels_of_a_gaussian_energy_sample_its_exact_conditional",)),
    Mutant("completions_keep_the_chains_known_pixels", "utils/evaluation/restoration.py",
           (("        ebm = torch.where(known, kept, ebm).reshape(", "        ebm = ebm.reshape("),),
           (R + "test_inpaint_and_denoise_write_their_results_and_keep_the_known_pixels",)),
    Mutant("buffer_census_by_the_online_classifier", "utils/training/reporting.py",
           (("    classifier = parts.ema.model if parts.ema is not None else parts.model\n",
             "    classifier = parts.model\n"),),
           ("tests/test_sampling.py::test_buffer_classes_follow_the_classifier_evaluation_uses",)),
]


def tree_files():
    """Tracked and untracked-but-not-ignored files: the working tree as it is, uncommitted changes included."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p and os.path.isfile(os.path.join(ROOT, p))]


def stale_edits(mutants):
    """'name: why' for each break whose text no longer occurs exactly once in its file."""
    stale = []
    for m in mutants:
        text = open(os.path.join(ROOT, m.path)).read()
        stale += [f"{m.name}: {old!r} occurs {text.count(old)} times in {m.path}" for old, _ in m.edits
                  if text.count(old) != 1]
    return stale


def broken_copy(mutant, files, where):
    for rel in files:
        os.makedirs(os.path.dirname(os.path.join(where, rel)) or where, exist_ok=True)
        shutil.copy2(os.path.join(ROOT, rel), os.path.join(where, rel))
    subprocess.run(["git", "init", "-q"], cwd=where, check=True)  # tests that list committed files need a repo
    subprocess.run(["git", "add", "-A"], cwd=where, check=True)
    target = os.path.join(where, mutant.path)
    text = open(target).read()
    for old, new in mutant.edits:
        if text.count(old) != 1:
            raise SystemExit(f"mutant {mutant.name}: {old!r} occurs {text.count(old)} times in {mutant.path}")
        text = text.replace(old, new)
    with open(target, "w") as fh:
        fh.write(text)


def run_mutant(mutant, files, python, timeout):
    """(caught, seconds, pytest's last line) for one break."""
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"mutant_{mutant.name}_") as where:
        broken_copy(mutant, files, where)
        proc = subprocess.run([python, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-o", "addopts=",
                               *mutant.tests], cwd=where, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    last = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    # 1: a test failed. Collection errors (2) or no tests run (4, 5) mean the named tests are wrong, not caught.
    return proc.returncode == 1, time.monotonic() - start, last


def main(argv=None):
    p = ArgumentParser("bench/mutants.py", description=__doc__.split("\n")[0],
                       example="python bench/mutants.py --jobs 2 --list")
    p.add_argument("--only", nargs="+", default=None, help="names of the breaks to run (default: all)")
    p.add_argument("--list", action="store_true", help="print each break and its tests, run nothing")
    p.add_argument("--jobs", type=positive_int, default=2, help="breaks tested at once")
    p.add_argument("--timeout", type=positive_int, default=900, help="seconds for one break's tests")
    a = p.parse_args(argv)
    names = {m.name for m in MUTANTS}
    unknown = sorted(set(a.only or ()) - names)
    if unknown:
        p.error(f"--only: unknown break(s) {', '.join(unknown)}; --list shows them")
    chosen = [m for m in MUTANTS if a.only is None or m.name in a.only]
    if a.list:
        for m in chosen:
            print(f"{m.name}: {m.path}; {' '.join(m.tests)}")
        return 0
    stale = stale_edits(chosen)
    if stale:  # checked before any run: one stale break must not stop the others halfway
        p.error("breaks that no longer apply (update their text): " + "; ".join(stale))
    files = tree_files()
    with ThreadPoolExecutor(a.jobs) as pool:
        results = list(pool.map(lambda m: run_mutant(m, files, sys.executable, a.timeout), chosen))
    for m, (caught, seconds, last) in zip(chosen, results):
        print(f"{'caught' if caught else 'MISSED'} {m.name} ({seconds:.0f} s): {last}", flush=True)
    missed = [m.name for m, (caught, _, _) in zip(chosen, results) if not caught]
    print(f"{len(chosen) - len(missed)} of {len(chosen)} breaks caught" + (f"; missed: {', '.join(missed)}" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
