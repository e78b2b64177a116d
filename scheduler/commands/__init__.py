"""Commands of the ``gpupool`` CLI that live in ``scheduler`` (one module per group)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scheduler.cli import Cli


def register_all(cli: Cli) -> None:
    """Add scheduler's own commands to ``cli``."""
    from scheduler.commands import bench_solver, db

    db.register(cli)
    bench_solver.register(cli)
