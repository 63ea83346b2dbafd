"""Shared test set-up.

Trainer launches in the suite run one CPU thread per process (utils/fastpath.cpu_threads_for_launch reads this):
the suite runs launches side by side on a 2-core machine, where more threads only oversubscribe it.
"""
import os

os.environ.setdefault("FACEGEN_THREADS", "1")
