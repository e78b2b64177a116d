"""Trace-driven simulation of the hub: a job trace replayed in simulated time through the real
cycle (snapshot → plan → validate → apply) and the real controller on the simulated cluster,
under gpupool's planner or a baseline policy (Slurm-, Kueue- or DRF-style), with metrics,
a summary table and plots.

Dependency direction: ``sim`` uses ``scheduler``, ``solver`` and ``k8s``; nothing imports it
but the CLI in ``api``.
"""
