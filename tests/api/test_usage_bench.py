"""``gpupool bench usage`` runs end to end on a small pool and prints its numbers."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from scheduler.cli import build


def test_bench_usage_prints_throughput_and_storage():
    r = CliRunner().invoke(build(), ["bench", "usage", "--gpus", "32", "--minutes", "1"])
    assert r.exit_code == 0, r.output
    assert "4 nodes x 8 = 32 GPUs" in r.output
    rates = re.findall(r"([\d,]+) samples/s  \((\d+) pushes", r.output)
    assert len(rates) == 2 and all(int(rate.replace(",", "")) > 0 for rate, _ in rates)
    # 6 passes of 32 GPUs in each phase, all stored, none a duplicate.
    assert "stored: 384 samples" in r.output
    assert "GET /v1/usage by tenant" in r.output


def test_bench_usage_refuses_bad_options():
    r = CliRunner().invoke(build(), ["bench", "usage", "--gpus", "4"])
    assert r.exit_code == 2
    assert "--gpus" in r.output
