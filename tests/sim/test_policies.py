"""Each policy on a tiny trace whose answer is known, through the real cycle and controller."""

from __future__ import annotations

from sim.jobs import JobState
from sim.metrics import compute
from tests.sim.helpers import by_id, job, run, starts

EQUAL = {"a": (4, 8), "b": (4, 8)}


def test_fifo_backfill_fills_a_hole_without_delaying_the_head() -> None:
    # Two nodes of 4. j1 holds one node until 960; j2 (8 GPUs) is the head and gets a
    # reservation at 960; j3 ends before 960 so it backfills now; j4 would run past 960 on
    # the head's GPUs, so it waits until the head is done.
    trace = [
        job("j1", "a", 0, 960, 4),
        job("j2", "a", 10, 600, 8),
        job("j3", "b", 20, 300, 4),
        job("j4", "b", 30, 2000, 4),
    ]
    result = run(trace, "fifo-backfill", EQUAL)
    s = starts(result)
    assert s == {"j1": [0], "j2": [960], "j3": [60], "j4": [1560]}
    assert all(j.state is JobState.DONE for j in result.jobs)
    m = compute(result)
    # The head's promise (960, made at 60) and j4's (1560, made at 960) were kept.
    assert m["eta_promised_jobs"] == 2
    assert m["eta_mae_s"] == 0
    assert m["preemptions"] == 0


def test_kueue_lends_idle_quota_and_reclaims_it() -> None:
    # a borrows b's idle nominal quota at 0; b's job at 1200 reclaims it by preemption and
    # starts within one cycle plus the grace; a's preempted job restarts from scratch later.
    trace = [
        job("a1", "a", 0, 5000, 4),
        job("a2", "a", 0, 5000, 4),
        job("b1", "b", 1200, 500, 4),
    ]
    result = run(trace, "kueue", EQUAL)
    j = by_id(result)
    assert j["a1"].runs == [(0, 5000)]
    assert j["a2"].runs[0] == (0, 1200)  # borrowed at 0, reclaimed at 1200
    assert j["a2"].preemptions == 1
    assert j["b1"].runs == [(1200, 1700)]
    assert j["b1"].runs[0][0] - 1200 <= 60 + 30
    assert j["a2"].runs[1][0] == 1740  # requeued, restarts at the cycle after b1 ends
    assert j["a2"].finished_at == 1740 + 5000
    m = compute(result)
    assert m["preemptions"] == 1
    assert m["guarantee_shortfall_gpu_hours"] == 0
    assert m["eta_mae_s"] is None  # Kueue promises no start times


def test_drf_splits_evenly_between_two_tenants() -> None:
    # Both tenants ask for 8 single-GPU jobs at once (a's first in the file); DRF gives each
    # half of the 8 GPUs, where FIFO would give a everything.
    trace = [job(f"a{i}", "a", 0, 1000, 1) for i in range(8)]
    trace += [job(f"b{i}", "b", 0, 1000, 1) for i in range(8)]
    result = run(trace, "drf", EQUAL)
    first = [j for j in result.jobs if j.runs and j.runs[0][0] == 0]
    assert sum(1 for j in first if j.tenant == "a") == 4
    assert sum(1 for j in first if j.tenant == "b") == 4
    fifo = run(trace, "fifo-backfill", EQUAL)
    assert {j.tenant for j in fifo.jobs if j.runs[0][0] == 0} == {"a"}


def test_gpupool_never_breaks_a_guarantee() -> None:
    # a fills the pool (half of it borrowed); b's guaranteed demand arrives at 1200 and is
    # served within one cycle plus the grace.
    trace = [
        job("a1", "a", 0, 3000, 4),
        job("a2", "a", 0, 3000, 4),
        job("b1", "b", 1200, 600, 4),
        job("b2", "b", 2400, 600, 2),
    ]
    result = run(trace, "gpupool", EQUAL, solver_time_limit_s=0.5)
    j = by_id(result)
    assert j["a1"].runs[0][0] == 0 and j["a2"].runs[0][0] == 0  # idle quota was lent
    assert j["b1"].runs[-1][0] - 1200 <= 60 + 30
    assert j["b2"].runs[-1][0] - 2400 <= 60 + 30
    m = compute(result)
    assert m["guarantee_shortfall_gpu_hours"] == 0
    assert m["completed"] == 4
    assert m["eta_mae_s"] is not None or m["eta_promised_jobs"] == 0
