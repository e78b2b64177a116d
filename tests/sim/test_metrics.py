"""Metrics computed by hand on a three-job trace, and the pieces they are made of."""

from __future__ import annotations

import numpy as np
import pytest

from sim.metrics import compute, jain, shortfall_gpu_s
from tests.sim.helpers import job, run, starts


def test_three_jobs_by_hand() -> None:
    # One node of 8 GPUs, FIFO with backfill, cycles every 60 s.
    # j1 (a) runs 0-600; j2 (b, 8 GPUs) is the head, reserved for 600, runs 600-900;
    # j3 (a, 4 GPUs) fits nowhere before j2 ends: reserved for 900, runs 900-2100.
    trace = [job("j1", "a", 0, 600, 8), job("j2", "b", 30, 300, 8), job("j3", "a", 60, 1200, 4)]
    result = run(trace, "fifo-backfill", {"a": (4, 8), "b": (4, 8)}, gpus=8, gpus_per_node=8)
    assert starts(result) == {"j1": [0], "j2": [600], "j3": [900]}
    m = compute(result)
    assert m["jobs"] == 3 and m["completed"] == 3 and m["gpus"] == 8
    assert m["makespan_s"] == 2100
    assert m["utilization"] == pytest.approx((8 * 600 + 8 * 300 + 4 * 1200) / (8 * 2100))
    assert m["mean_wait_s"] == pytest.approx((0 + 570 + 840) / 3)
    assert m["p50_wait_s"] == pytest.approx(570)
    assert m["mean_jct_s"] == pytest.approx((600 + 870 + 2040) / 3)
    # bounded slowdown: j1 1, j2 870/300 = 2.9, j3 2040/1200 = 1.7
    assert m["mean_bounded_slowdown"] == pytest.approx((1 + 2.9 + 1.7) / 3)
    assert m["tenant_mean_wait_s"] == {"a": pytest.approx(420), "b": pytest.approx(570)}
    # Jain over the tenants' mean slowdowns: a (1 + 1.7) / 2 = 1.35, b 2.9
    assert m["jain_fairness"] == pytest.approx(4.25**2 / (2 * (1.35**2 + 2.9**2)))
    # a's j3 (4 GPUs, within a's guarantee of 4) is owed from 600, when a holds nothing, to
    # 900: 300 s, of which the first 60 + 30 s are tolerated -> 4 GPUs x 210 s.
    assert m["guarantee_shortfall_gpu_hours"] == pytest.approx(4 * 210 / 3600)
    assert m["tenant_guarantee_shortfall_gpu_hours"]["b"] == 0  # j2 is bigger than b's 4
    # Both promises (j2 at 600, made at 60; j3 at 900, made at 600) were kept.
    assert m["eta_mae_s"] == 0 and m["eta_promised_jobs"] == 2
    assert m["preemptions"] == 0


def test_jain_index() -> None:
    assert jain([2.0, 2.0, 2.0]) == pytest.approx(1.0)
    assert jain([1.0, 0.0]) == pytest.approx(0.5)
    assert jain([]) is None


def test_shortfall_counts_only_what_lasts_longer_than_the_tolerance() -> None:
    times = np.array([0, 100, 130, 400])
    levels = np.array([0, 2, 0, 0])  # 30 s unserved: within a 90 s tolerance
    assert shortfall_gpu_s(times, levels, 1000, 90) == 0
    levels = np.array([0, 3, 3, 0])  # 300 s unserved: 210 s of it count
    assert shortfall_gpu_s(times, levels, 1000, 90) == 3 * 210


def test_targets_compare_gpupool_with_the_best_baseline() -> None:
    from sim.report import targets

    def row(policy: str, wait: float, util: float, jain: float, short: float) -> dict[str, object]:
        return {
            "policy": policy,
            "mean_wait_s": wait,
            "utilization": util,
            "jain_fairness": jain,
            "guarantee_shortfall_gpu_hours": short,
        }

    rows = [
        row("gpupool", 600, 0.795, 0.9, 0.0),
        row("kueue", 1000, 0.80, 0.8, 3.0),
        row("drf", 900, 0.70, 0.95, 1.0),
    ]
    got = {t: met for t, met, _ in targets(rows)}
    assert got == {
        "mean wait <= 0.7 x best baseline": True,  # 600 <= 0.7 x 900
        "guarantee shortfall 0": True,
        "utilisation within 1 point of the best baseline": True,  # 79.5 vs 80.0
        "Jain fairness >= the best baseline's": False,  # 0.9 < drf's 0.95
    }
    assert targets(rows[1:]) == []
