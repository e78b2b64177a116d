"""``gpupool simulate``: bad input ends in one line naming the field and a non-zero exit;
--compare, --json and --plot write what they say."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scheduler.cli import build
from tests.sim.helpers import job, trace_file

TRACE = [
    job("j1", "a", 0, 600, 8),
    job("j2", "b", 30, 300, 8),
    job("j3", "a", 60, 1200, 4),
]


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(build(), ["simulate", "--no-progress", *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    return trace_file(tmp_path, TRACE)


def one_line_error(code: int, err: str, *words: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for w in words:
        assert w in lines[0], lines[0]


def test_missing_trace(tmp_path: Path) -> None:
    code, _, err = invoke("--trace", str(tmp_path / "nope.csv"), "--gpus", "8")
    one_line_error(code, err, "no such file", "nope.csv")


def test_bad_row_names_row_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "job_id,tenant,submit_s,duration_s,gpus,gpu_type\n"
        "j1,a,0,600,8,unknown\n"
        "j2,b,30,300,eight,unknown\n"
    )
    code, _, err = invoke("--trace", str(path), "--gpus", "8")
    one_line_error(code, err, "row 3", "gpus", "eight")


def test_negative_duration(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("job_id,tenant,submit_s,duration_s,gpus,gpu_type\nj1,a,0,-5,8,unknown\n")
    code, _, err = invoke("--trace", str(path), "--gpus", "8")
    one_line_error(code, err, "row 2", "duration_s")


def test_unknown_policy(trace: Path) -> None:
    code, _, err = invoke("--trace", str(trace), "--gpus", "8", "--policy", "sjf")
    one_line_error(code, err, "policy", "sjf")
    code, _, err = invoke("--trace", str(trace), "--gpus", "8", "--compare", "drf,lottery")
    one_line_error(code, err, "lottery")


@pytest.mark.parametrize("gpus", ["0", "-8"])
def test_gpus_must_be_positive(trace: Path, gpus: str) -> None:
    code, _, err = invoke("--trace", str(trace), "--gpus", gpus)
    one_line_error(code, err, "--gpus", "positive")


def test_pool_smaller_than_a_job(trace: Path) -> None:
    code, _, err = invoke("--trace", str(trace), "--gpus", "4", "--gpus-per-node", "4")
    one_line_error(code, err, "--gpus", "j1")


def test_bad_quotas_file(trace: Path, tmp_path: Path) -> None:
    over = tmp_path / "q.json"
    over.write_text(json.dumps({"a": {"guaranteed": 6}, "b": {"guaranteed": 6}}))
    code, _, err = invoke("--trace", str(trace), "--gpus", "8", "--quotas", str(over))
    one_line_error(code, err, "--quotas", "12", "8")
    broken = tmp_path / "q2.json"
    broken.write_text("{not json")
    code, _, err = invoke("--trace", str(trace), "--gpus", "8", "--quotas", str(broken))
    one_line_error(code, err, "--quotas", "JSON")
    bad_value = tmp_path / "q.csv"
    bad_value.write_text("tenant,guaranteed,limit\na,four,8\n")
    code, _, err = invoke("--trace", str(trace), "--gpus", "8", "--quotas", str(bad_value))
    one_line_error(code, err, "--quotas", "'a'", "guaranteed")
    code, _, err = invoke("--trace", str(trace), "--gpus", "8", "--quotas", str(tmp_path / "x"))
    one_line_error(code, err, "--quotas", "no such file")


def test_compare_writes_json_and_plots(trace: Path, tmp_path: Path) -> None:
    quotas = tmp_path / "q.csv"
    quotas.write_text("tenant,guaranteed\na,4\nb,4\n")
    out_json = tmp_path / "out" / "r.json"
    out_png = tmp_path / "out" / "r.png"
    code, out, err = invoke(
        "--trace", str(trace), "--gpus", "8", "--gpus-per-node", "8",
        "--compare", "fifo-backfill,drf", "--quotas", str(quotas),
        "--json", str(out_json), "--plot", str(out_png),
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(out_json.read_text())
    assert [p["policy"] for p in doc["policies"]] == ["fifo-backfill", "drf"]
    fifo = doc["policies"][0]
    assert fifo["jobs"] == 3 and fifo["completed"] == 3
    assert fifo["makespan_s"] == 2100
    assert fifo["mean_wait_s"] == pytest.approx(470)
    quota = {"guaranteed": 4, "limit": 8}
    assert fifo["quotas"] == {"a": quota, "b": quota}
    assert doc["policies"][1]["eta_mae_s"] is None
    for png in (out_png, tmp_path / "out" / "r-wait-cdf.png"):
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    # The table: one column per policy, the wait and fairness rows present.
    assert "fifo-backfill" in out and "drf" in out
    assert "mean wait_s" in out and "jain_fairness" in out
    assert "470" in out
