"""Sampling from the energy model: the samplers (one entry point, run_sampler), SGLD as upstream, chain starts
(--init), the replay buffer, and per-chain diagnostics."""
