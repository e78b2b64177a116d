"""No libnvidia-ml.so.1 at all: the agent says so once, keeps going, and recovers.

pynvml caches the loaded library for the life of the process, so this runs in a fresh
Python process where nothing has loaded the fake library yet.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.metrics.fakes import FakeGpu, render_scenario

SCRIPT = r"""
import ctypes, json, logging, sys
from datetime import UTC, datetime
import pynvml
from metrics.agent.nvml_reader import NvmlReader

logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")
try:
    pynvml.nvmlInit()
    raised = None
except pynvml.NVMLError as exc:
    raised = type(exc).__name__
ticks = [0.0]
reader = NvmlReader(lambda: datetime(2026, 1, 1, tzinfo=UTC), retry_init_s=30,
                    monotonic=lambda: ticks[0])
first = reader.read()
ticks[0] += 31
second = reader.read()
# The library appears (the driver was installed): the next retry finds it.
ctypes.CDLL(sys.argv[1], mode=ctypes.RTLD_GLOBAL)
ticks[0] += 31
third = reader.read()
reader.close()
print(json.dumps({
    "raised": raised,
    "ok": [first.nvml_ok, second.nvml_ok, third.nvml_ok],
    "error": first.error,
    "gpus": [g.uuid for g in third.gpus],
}))
"""


def test_library_not_found_then_found(fake_nvml_lib: Path, tmp_path: Path) -> None:
    scenario = tmp_path / "scenario.txt"
    scenario.write_text(render_scenario([FakeGpu(uuid="GPU-late")]))
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    env["FAKE_NVML_CONFIG"] = str(scenario)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(fake_nvml_lib)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(done.stdout)
    assert result["raised"] == "NVMLError_LibraryNotFound"
    assert result["ok"] == [False, False, True]
    assert "libnvidia-ml.so.1 not found" in result["error"]
    assert result["gpus"] == ["GPU-late"]
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
    # One clear line for the missing library, not one per retry.
    assert len(errors) == 1, done.stderr
    assert "libnvidia-ml.so.1 not found" in errors[0]
    assert "serving agent health metrics only, retrying every 30s" in errors[0]
