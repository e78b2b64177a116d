"""The NVML reader against the real pynvml binding and the fake libnvidia-ml.so.1."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pynvml
import pytest

from metrics.agent.model import Profiling
from metrics.agent.nvml_reader import NvmlReader
from tests.metrics.conftest import FakeNvml
from tests.metrics.fakes import (
    DRIVER_NOT_LOADED,
    GIB,
    MIB,
    NOT_SUPPORTED,
    UNKNOWN,
    FakeGpu,
    FakeMig,
)

AT = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


class Ticks:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def reader(ticks: Ticks | None = None, retry_s: float = 30.0) -> NvmlReader:
    return NvmlReader(lambda: AT, retry_init_s=retry_s, monotonic=ticks or Ticks())


def test_pynvml_uses_the_preloaded_fake_library(fake_nvml: FakeNvml) -> None:
    fake_nvml.set([FakeGpu(uuid="GPU-a")])
    pynvml.nvmlInit()
    try:
        # pynvml opened "libnvidia-ml.so.1" by soname and got the library opened first.
        assert pynvml.nvmlLib._handle == fake_nvml.lib._handle
        assert pynvml.nvmlDeviceGetCount() == 1
    finally:
        pynvml.nvmlShutdown()


def test_reads_every_field_of_a_gpu(fake_nvml: FakeNvml) -> None:
    fake_nvml.set(
        [
            FakeGpu(
                uuid="GPU-11111111-2222-3333-4444-555555555555",
                minor=3,
                memory=(80 * GIB, 12 * GIB, 1 * GIB),
                util=(87, 40),
                power_mw=312_500,
                temp=61,
                clocks=(1755, 2619),
                processes=[(4242, 10 * GIB), (4243, 2 * GIB)],
            )
        ],
        driver="550.90.07",
    )
    r = reader()
    node = r.read()
    r.close()
    assert node.nvml_ok and node.error is None and node.driver_version == "550.90.07"
    [gpu] = node.gpus
    assert (gpu.index, gpu.uuid, gpu.name, gpu.device) == (
        0,
        "GPU-11111111-2222-3333-4444-555555555555",
        "NVIDIA H100 80GB HBM3",
        "nvidia3",
    )
    # The v2 memory call (right version field) keeps the driver's reservation out of "used".
    assert gpu.memory_total_bytes == 80 * GIB
    assert gpu.memory_used_bytes == 12 * GIB
    assert gpu.memory_free_bytes == 67 * GIB
    assert (gpu.util_pct, gpu.mem_copy_util_pct) == (87.0, 40.0)
    assert gpu.power_w == 312.5
    assert gpu.temp_c == 61
    assert (gpu.sm_clock_mhz, gpu.mem_clock_mhz) == (1755.0, 2619.0)
    assert not gpu.mig_enabled and gpu.healthy
    assert [(p.pid, p.used_bytes) for p in gpu.processes] == [(4242, 10 * GIB), (4243, 2 * GIB)]


def test_no_processes_is_an_empty_list(fake_nvml: FakeNvml) -> None:
    fake_nvml.set([FakeGpu(uuid="GPU-a")])
    r = reader()
    assert r.read().gpus[0].processes == ()
    r.close()


def test_mig_instances_are_read_with_profiles_and_processes(fake_nvml: FakeNvml) -> None:
    fake_nvml.set(
        [
            FakeGpu(
                uuid="GPU-mig",
                util=(50, 50),
                migs=[
                    FakeMig(
                        name="NVIDIA H100 80GB HBM3 MIG 3g.40gb",
                        uuid="MIG-a",
                        gi=2,
                        memory=(40 * GIB, 5 * GIB),
                        processes=[(700, 4 * GIB)],
                    ),
                    FakeMig(name="NVIDIA H100 80GB HBM3 MIG 1g.10gb", uuid="MIG-b", gi=9),
                    # A second compute instance in GPU instance 2: merged into it.
                    FakeMig(
                        name="NVIDIA H100 80GB HBM3 MIG 3g.40gb",
                        uuid="MIG-c",
                        gi=2,
                        ci=1,
                        memory=(40 * GIB, 5 * GIB),
                        processes=[(701, 1 * GIB)],
                    ),
                ],
            )
        ]
    )
    r = reader()
    [gpu] = r.read().gpus
    r.close()
    assert gpu.mig_enabled
    # Utilisation is not reported in MIG mode: absent, not zero.
    assert gpu.util_pct is None
    assert gpu.processes == ()
    assert [(m.gpu_instance_id, m.profile, m.uuid) for m in gpu.mig] == [
        (2, "3g.40gb", "MIG-a"),
        (9, "1g.10gb", "MIG-b"),
    ]
    first = gpu.mig[0]
    assert (first.memory_total_bytes, first.memory_used_bytes) == (40 * GIB, 5 * GIB)
    assert [(p.pid, p.used_bytes) for p in first.processes] == [(700, 4 * GIB), (701, GIB)]


def test_mig_capable_gpu_with_mig_disabled_reads_as_a_whole_gpu(fake_nvml: FakeNvml) -> None:
    fake_nvml.set([FakeGpu(uuid="GPU-a", mig_mode=0, util=(5, 1), processes=[(9, MIB)])])
    r = reader()
    [gpu] = r.read().gpus
    r.close()
    assert not gpu.mig_enabled and gpu.util_pct == 5.0 and len(gpu.processes) == 1


def test_unsupported_fields_are_absent_and_not_logged(
    fake_nvml: FakeNvml, caplog: pytest.LogCaptureFixture
) -> None:
    fake_nvml.set(
        [
            FakeGpu(
                uuid="GPU-a",
                fails={"power": NOT_SUPPORTED, "temp": NOT_SUPPORTED, "clock": NOT_SUPPORTED},
            )
        ]
    )
    r = reader()
    with caplog.at_level(logging.WARNING):
        [gpu] = r.read().gpus
    r.close()
    assert gpu.healthy
    assert (gpu.power_w, gpu.temp_c, gpu.sm_clock_mhz) == (None, None, None)
    assert gpu.memory_total_bytes == 80 * GIB  # The supported fields are still read.
    assert caplog.records == []


def test_an_unexpected_field_error_is_logged_once(
    fake_nvml: FakeNvml, caplog: pytest.LogCaptureFixture
) -> None:
    fake_nvml.set([FakeGpu(uuid="GPU-a", fails={"util": UNKNOWN})])
    r = reader()
    with caplog.at_level(logging.WARNING):
        first = r.read()
        r.read()
    r.close()
    assert first.gpus[0].util_pct is None and first.gpus[0].healthy
    messages = [rec.getMessage() for rec in caplog.records]
    assert len(messages) == 1 and "GPU 0: reading util failed" in messages[0]


def test_a_lost_gpu_is_unhealthy_and_the_others_are_still_read(fake_nvml: FakeNvml) -> None:
    fake_nvml.set([FakeGpu(uuid="GPU-a", util=(10, 0)), FakeGpu(uuid="GPU-b", util=(20, 0))])
    r = reader()
    assert [g.healthy for g in r.read().gpus] == [True, True]
    # GPU 0 falls off the bus: every call on it now answers GPU_IS_LOST.
    fake_nvml.set([FakeGpu(uuid="GPU-a", lost=True), FakeGpu(uuid="GPU-b", util=(30, 0))])
    node = r.read()
    lost, fine = node.gpus
    assert node.nvml_ok
    assert not lost.healthy and "GPU is lost" in (lost.error or "")
    assert lost.uuid == "GPU-a"  # Identity kept from the last good read.
    assert fine.healthy and fine.util_pct == 30.0
    # It comes back after a reset.
    fake_nvml.set([FakeGpu(uuid="GPU-a", util=(11, 0)), FakeGpu(uuid="GPU-b")])
    assert r.read().gpus[0].healthy
    r.close()


def test_a_gpu_lost_before_the_first_read_has_no_uuid(fake_nvml: FakeNvml) -> None:
    fake_nvml.set([FakeGpu(uuid="GPU-a", lost=True)])
    r = reader()
    [gpu] = r.read().gpus
    r.close()
    assert (gpu.healthy, gpu.uuid, gpu.index) == (False, "", 0)


def test_driver_not_loaded_is_reported_once_and_retried(
    fake_nvml: FakeNvml, caplog: pytest.LogCaptureFixture
) -> None:
    fake_nvml.set([FakeGpu(uuid="GPU-a")], init_error=DRIVER_NOT_LOADED)
    ticks = Ticks()
    r = reader(ticks, retry_s=30)
    with caplog.at_level(logging.ERROR):
        down = r.read()
        ticks.now += 31
        r.read()  # Retried, failed the same way: no second log line.
    assert not down.nvml_ok and down.gpus == ()
    assert "driver not loaded" in (down.error or "")
    assert len(caplog.records) == 1
    assert "retrying every 30s" in caplog.records[0].getMessage()
    # The driver is loaded: the next retry (not before the interval) succeeds.
    fake_nvml.set([FakeGpu(uuid="GPU-a")])
    ticks.now += 10
    assert not r.read().nvml_ok
    ticks.now += 25
    up = r.read()
    r.close()
    assert up.nvml_ok and [g.uuid for g in up.gpus] == ["GPU-a"]


def test_driver_gone_mid_run_marks_known_gpus_unhealthy_then_recovers(
    fake_nvml: FakeNvml,
) -> None:
    fake_nvml.set([FakeGpu(uuid="GPU-a"), FakeGpu(uuid="GPU-b")])
    ticks = Ticks()
    r = reader(ticks, retry_s=5)
    assert r.read().nvml_ok
    fake_nvml.set([FakeGpu(uuid="GPU-a")], count_error=DRIVER_NOT_LOADED)
    down = r.read()
    assert not down.nvml_ok
    assert [(g.uuid, g.healthy) for g in down.gpus] == [("GPU-a", False), ("GPU-b", False)]
    fake_nvml.set([FakeGpu(uuid="GPU-a"), FakeGpu(uuid="GPU-b")])
    ticks.now += 6
    up = r.read()
    r.close()
    assert up.nvml_ok and all(g.healthy for g in up.gpus)


def test_energy_is_read_in_millijoules(fake_nvml: FakeNvml) -> None:
    fake_nvml.set([FakeGpu(uuid="GPU-a", energy_mj=123_456_789)])
    r = reader()
    assert r.read().gpus[0].energy_mj == 123_456_789
    r.close()


def test_gpm_profiling_needs_two_samples(fake_nvml: FakeNvml) -> None:
    fake_nvml.set(
        [FakeGpu(uuid="GPU-a", gpm=(90.0, 80.0, 50.0, 60.0, 30.0)), FakeGpu(uuid="GPU-b")]
    )
    r = reader()
    first = r.read()
    second = r.read()
    r.close()
    # GPM measures between two samples: nothing on the first pass after start.
    assert first.gpus[0].prof is None
    assert second.gpus[0].prof == Profiling(0.9, 0.8, 0.5, 0.6, 0.3)
    # A GPU without GPM (before Hopper) never has profiling values.
    assert second.gpus[1].prof is None


def test_gpm_per_mig_instance(fake_nvml: FakeNvml) -> None:
    fake_nvml.set(
        [
            FakeGpu(
                uuid="GPU-mig",
                migs=[
                    FakeMig(uuid="MIG-a", gi=1, gpm=(40.0, 30.0, 20.0, 10.0, 5.0)),
                    FakeMig(uuid="MIG-b", gi=2, gpm=(0.0, 0.0, 0.0, 0.0, 0.0)),
                ],
            )
        ]
    )
    r = reader()
    r.read()
    [gpu] = r.read().gpus
    r.close()
    assert gpu.prof is None  # The whole GPU has no GPM sample in MIG mode.
    assert [m.prof.gr_engine_active if m.prof else None for m in gpu.mig] == [0.4, 0.0]


def test_gpm_starts_afresh_after_a_gpu_is_lost(fake_nvml: FakeNvml) -> None:
    gpm = (10.0, 10.0, 10.0, 10.0, 10.0)
    fake_nvml.set([FakeGpu(uuid="GPU-a", gpm=gpm)])
    r = reader()
    r.read()
    assert r.read().gpus[0].prof is not None
    fake_nvml.set([FakeGpu(uuid="GPU-a", gpm=gpm, lost=True)])
    assert not r.read().gpus[0].healthy
    fake_nvml.set([FakeGpu(uuid="GPU-a", gpm=gpm)])
    back = r.read().gpus[0]
    r.close()
    # Its old sample is gone: no activity computed across the outage.
    assert back.healthy and back.prof is None


def test_a_failing_gpm_is_skipped_not_fatal(fake_nvml: FakeNvml) -> None:
    fake_nvml.set(
        [
            FakeGpu(
                uuid="GPU-a",
                util=(3, 0),
                gpm=(1.0, 1.0, 1.0, 1.0, 1.0),
                fails={"gpm": NOT_SUPPORTED},
            )
        ]
    )
    r = reader()
    r.read()
    [gpu] = r.read().gpus
    r.close()
    assert gpu.healthy and gpu.prof is None and gpu.util_pct == 3.0
