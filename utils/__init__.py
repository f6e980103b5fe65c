"""Helpers for the M-EBM scripts: data, Gaussian starts, sampling, buffers, checkpoints, logging."""
