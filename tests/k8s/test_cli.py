"""``gpupool bench k8s`` is contributed through the entry point's ``register``."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from k8s.cli import register
from scheduler.cli import Cli


def test_register_adds_bench_k8s() -> None:
    root, db, bench = typer.Typer(), typer.Typer(), typer.Typer()
    root.add_typer(db, name="db")
    root.add_typer(bench, name="bench")
    register(Cli(root=root, db=db, bench=bench))
    result = CliRunner().invoke(root, ["bench", "k8s", "--help"])
    assert result.exit_code == 0, result.output
    assert "--pods" in result.output and "--rounds" in result.output
    bad = CliRunner().invoke(root, ["bench", "k8s", "--pods", "0"])
    assert bad.exit_code != 0 and "pods" in bad.output.lower()
