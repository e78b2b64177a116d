"""``gpupool agent``: registration in the CLI, options, and clear errors for bad values."""

from __future__ import annotations

import socket
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from metrics.agent.config import AgentConfig
from metrics.cli import register
from scheduler.cli import Cli


def cli() -> typer.Typer:
    root = typer.Typer()
    bench = typer.Typer()
    root.add_typer(bench, name="bench")
    register(Cli(root=root, db=typer.Typer(), bench=bench))

    @root.callback()
    def main() -> None:
        """gpupool."""

    return root


def test_the_entry_point_is_declared() -> None:
    [ep] = [ep for ep in entry_points(group="gpupool.commands") if ep.name == "metrics"]
    assert ep.value == "metrics.cli:register"
    assert ep.load() is register


def test_agent_is_a_root_command_with_its_options() -> None:
    result = CliRunner().invoke(cli(), ["agent", "--help"])
    assert result.exit_code == 0
    for option in ("--server", "--token-file", "--interval", "--host-proc", "--no-kubernetes"):
        assert option in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--interval", "0"], "interval_s: must be at least 1, got 0"),
        (["--server", "gpupool:8000"], "server_url: 'gpupool:8000' is not an http(s) URL"),
        (["--batch-size", "0"], "batch_size: must be at least 1, got 0"),
        (["--port", "70000"], "port: 70000 is not a TCP port"),
        (["--log-level", "loud"], "'loud' is not a log level"),
    ],
)
def test_bad_values_are_refused_with_the_option_and_reason(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli(), ["agent", "--no-kubernetes", *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_environment_variables_configure_the_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUPOOL_AGENT_INTERVAL", "0.5")
    result = CliRunner().invoke(cli(), ["agent", "--no-kubernetes"])
    assert result.exit_code == 2
    assert "interval_s: must be at least 1, got 0.5" in " ".join(result.output.split())


def test_config_refuses_a_token_and_a_token_file() -> None:
    with pytest.raises(ValueError, match="token: give either a token or a token file"):
        AgentConfig(node_name="n", token="t", token_file=Path("f"))


def test_config_refuses_an_empty_node_name() -> None:
    with pytest.raises(ValueError, match="node_name: must not be empty"):
        AgentConfig(node_name=" ")


def test_missing_kubernetes_credentials_are_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-kubeconfig"
    result = CliRunner().invoke(cli(), ["agent", "--kubeconfig", str(missing), "--port", "0"])
    assert result.exit_code == 2
    output = " ".join(result.output.split())
    assert "gpupool agent: no Kubernetes credentials" in output
    assert "--no-kubernetes" in output


def test_a_busy_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            cli(), ["agent", "--no-kubernetes", "--listen", "127.0.0.1", "--port", str(port)]
        )
    assert result.exit_code == 2
    assert f"cannot serve metrics on 127.0.0.1:{port}" in " ".join(result.output.split())


def test_bench_agent_prints_its_numbers() -> None:
    result = CliRunner().invoke(
        cli(), ["bench", "agent", "--gpus", "2", "--mig", "3", "--passes", "2", "--samples", "50"]
    )
    assert result.exit_code == 0, result.output
    assert "devices per node             6" in result.output
    for label in ("sampling pass", "/metrics scrape", "buffered sample", "push throughput"):
        assert label in result.output


def test_bench_agent_refuses_nonsense() -> None:
    result = CliRunner().invoke(cli(), ["bench", "agent", "--gpus", "0"])
    assert result.exit_code == 2
    assert "must be at least 1, got 0" in " ".join(result.output.split())
