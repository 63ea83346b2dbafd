"""Shared utilities: data, run setup, EMA, checkpoints, exports, metrics, images, logging."""
