"""The ``gpupool`` command line.

The root app and the command groups that ``scheduler`` owns live here. Commands that need
``api``, ``k8s`` or ``metrics`` (which ``scheduler`` must not import) are contributed by those
packages through the ``gpupool.commands`` entry-point group: each entry point is a function
``register(cli: Cli) -> None`` that adds its commands to the groups below.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points

import typer


@dataclass(frozen=True)
class Cli:
    """The command groups a package may add commands to."""

    root: typer.Typer
    db: typer.Typer
    bench: typer.Typer


def build() -> typer.Typer:
    """The full CLI: scheduler's own commands plus every registered contribution."""
    root = typer.Typer(
        no_args_is_help=True,
        add_completion=False,
        rich_markup_mode="markdown",  # docstrings reflow: line breaks inside a paragraph go
        help="gpupool: a GPU allocation scheduler for AI hubs.",
    )
    db = typer.Typer(
        no_args_is_help=True, help="Database schema commands.", rich_markup_mode="markdown"
    )
    bench = typer.Typer(
        no_args_is_help=True, help="Benchmarks that print numbers.", rich_markup_mode="markdown"
    )
    root.add_typer(db, name="db")
    root.add_typer(bench, name="bench")
    cli = Cli(root=root, db=db, bench=bench)
    from scheduler.commands import register_all

    register_all(cli)
    for ep in sorted(entry_points(group="gpupool.commands"), key=lambda e: e.name):
        ep.load()(cli)
    return root


def main() -> None:
    """Entry point: expected failures end with one line on stderr and a non-zero exit."""
    import sys

    from sqlalchemy.exc import OperationalError

    from scheduler.errors import GpupoolError

    try:
        build()()
    except GpupoolError as exc:
        print(f"gpupool: error: {exc.code}: {exc.detail}", file=sys.stderr)
        sys.exit(1)
    except OperationalError as exc:
        print(f"gpupool: error: database unreachable: {exc.orig}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
