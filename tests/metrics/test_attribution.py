"""Processes to pods: cgroups from a fake host /proc, pods from a dictionary directory."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from metrics.agent.attribution import PodAttributor, PodUse
from metrics.agent.cgroup import HostProc
from metrics.agent.model import GpuProcess, GpuReading, MigReading, NodeReading
from metrics.agent.pods import PodInfo
from tests.metrics.fakes import MIB, pod_cgroup, write_host_proc

UID_A = "11111111-1111-4111-8111-111111111111"
UID_B = "22222222-2222-4222-8222-222222222222"
UID_GONE = "33333333-3333-4333-8333-333333333333"
CID_A_MAIN, CID_A_SIDE, CID_B = "a" * 64, "c" * 64, "b" * 64


class DictPods:
    failures = 0

    def __init__(self, pods: list[PodInfo]) -> None:
        self.pods = {p.uid: p for p in pods}

    def lookup(self, pod_uid: str) -> PodInfo | None:
        return self.pods.get(pod_uid)


PODS = DictPods(
    [
        PodInfo(
            uid=UID_A,
            namespace="acme",
            name="train-0",
            request_id=42,
            container_names=("main", "side"),
            containers={CID_A_MAIN: "main", CID_A_SIDE: "side"},
        ),
        PodInfo(uid=UID_B, namespace="beta", name="infer-1", container_names=("srv",)),
    ]
)


def attributor(tmp_path: Path) -> PodAttributor:
    proc = write_host_proc(
        tmp_path,
        {
            100: pod_cgroup(UID_A, CID_A_MAIN),
            101: pod_cgroup(UID_A, CID_A_MAIN),
            102: pod_cgroup(UID_A, CID_A_SIDE),
            200: pod_cgroup(UID_B, CID_B),
            300: pod_cgroup(UID_GONE, "d" * 64),
            400: "0::/system.slice/nvidia-persistenced.service\n",
        },
    )
    return PodAttributor(HostProc(proc), PODS)


def test_processes_are_summed_per_container_and_sorted(tmp_path: Path) -> None:
    uses = attributor(tmp_path).uses(
        [
            GpuProcess(200, 5 * MIB),
            GpuProcess(100, 100 * MIB),
            GpuProcess(101, 20 * MIB),
            GpuProcess(102, None),
        ]
    )
    assert uses == (
        PodUse(UID_A, "acme", "train-0", "main", 42, 120 * MIB),
        PodUse(UID_A, "acme", "train-0", "side", 42, None),
        # The container ID is unknown to the pod's status, but it has one container.
        PodUse(UID_B, "beta", "infer-1", "srv", None, 5 * MIB),
    )


def test_host_processes_and_exited_processes_are_left_out(tmp_path: Path) -> None:
    uses = attributor(tmp_path).uses([GpuProcess(400, MIB), GpuProcess(999, MIB)])
    assert uses == ()


def test_a_pod_unknown_to_the_api_keeps_its_uid_without_names(tmp_path: Path) -> None:
    [use] = attributor(tmp_path).uses([GpuProcess(300, 7 * MIB)])
    assert use == PodUse(UID_GONE, "", "", "", None, 7 * MIB)


def test_snapshot_keys_whole_gpus_and_mig_instances(tmp_path: Path) -> None:
    reading = NodeReading(
        at=datetime(2026, 11, 22, tzinfo=UTC),
        nvml_ok=True,
        gpus=(
            GpuReading(
                index=0, uuid="GPU-a", name="H100", minor=0, processes=(GpuProcess(200, 1),)
            ),
            GpuReading(
                index=1,
                uuid="GPU-b",
                name="H100",
                minor=1,
                mig_enabled=True,
                mig=(
                    MigReading(
                        gpu_instance_id=3,
                        profile="1g.10gb",
                        uuid="MIG-x",
                        processes=(GpuProcess(100, 2),),
                    ),
                    MigReading(gpu_instance_id=5, profile="1g.10gb", uuid="MIG-y"),
                ),
            ),
        ),
    )
    snapshot = attributor(tmp_path).snapshot(reading)
    assert [u.pod for u in snapshot.pods_on((0, None))] == ["infer-1"]
    assert [u.pod for u in snapshot.pods_on((1, 3))] == ["train-0"]
    assert snapshot.pods_on((1, 5)) == ()
    assert snapshot.pods_on((1, None)) == ()
