"""``gpupool db``: schema migrations."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from scheduler import migrate
from scheduler.db import make_engine
from scheduler.settings import Settings

if TYPE_CHECKING:
    from scheduler.cli import Cli

DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="Default: GPUPOOL_DATABASE_URL or sqlite:///gpupool.db"),
]


def register(cli: Cli) -> None:
    @cli.db.command("upgrade")
    def upgrade(
        database_url: DatabaseUrl = None,
        revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
    ) -> None:
        """Bring the database schema up to date."""
        url = database_url or Settings().database_url
        engine = make_engine(url)
        migrate.upgrade(engine, revision)
        typer.echo(f"database at revision {migrate.current_revision(engine)}")

    @cli.db.command("current")
    def current(database_url: DatabaseUrl = None) -> None:
        """Print the database's schema revision and the newest one this code knows."""
        engine = make_engine(database_url or Settings().database_url)
        typer.echo(f"current: {migrate.current_revision(engine)}  head: {migrate.head_revision()}")
