"""Fixtures for the node agent tests: the fake NVML library, built once per session."""

from __future__ import annotations

import ctypes
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.metrics.fakes import FakeGpu, compile_fake_nvml, render_scenario


@pytest.fixture(scope="session")
def fake_nvml_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``libnvidia-ml.so.1`` compiled from ``fakenvml/fake_nvml.c`` with gcc."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc not found: cannot build the fake NVML library")
    return compile_fake_nvml(tmp_path_factory.mktemp("fakenvml"))


class FakeNvml:
    """The fake library loaded into this test process, and its scenario file."""

    def __init__(self, lib: ctypes.CDLL, config: Path) -> None:
        self.lib = lib
        self.config = config

    def set(self, gpus: list[FakeGpu], **options: Any) -> None:
        """Script the GPUs; takes effect at the next NVML init, or now for an open session."""
        self.config.write_text(render_scenario(gpus, **options))
        assert self.lib.fake_nvml_reload() == 0, "the fake NVML rejected the scenario"


@pytest.fixture
def fake_nvml(
    fake_nvml_lib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeNvml]:
    """The fake NVML in-process: opened first by absolute path, so the soname
    ``libnvidia-ml.so.1`` that pynvml asks for resolves to it."""
    config = tmp_path / "nvml-scenario.txt"
    config.write_text(render_scenario([]))
    monkeypatch.setenv("FAKE_NVML_CONFIG", str(config))
    lib = ctypes.CDLL(str(fake_nvml_lib), mode=ctypes.RTLD_GLOBAL)
    yield FakeNvml(lib, config)
    # Leave no NVML session open for the next test (the fake counts nvmlInit calls).
    while lib.nvmlShutdown() == 0:
        pass
