"""Pod UID and container ID from /proc/<pid>/cgroup, on fixture files of every layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from metrics.agent.cgroup import CgroupRef, HostProc, parse_cgroup

FIXTURES = Path(__file__).parent / "fixtures" / "cgroup"
POD = "7e2a1c10-3b4d-4e5f-8a9b-0c1d2e3f4a5b"
CONTAINER = "3f1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809"


@pytest.mark.parametrize(
    "fixture",
    [
        "v1-cgroupfs-burstable.txt",
        "v1-cgroupfs-guaranteed.txt",
        "v1-systemd-docker.txt",
        "v1-systemd-containerd-colon.txt",
        "v2-systemd-containerd.txt",
        "v2-systemd-guaranteed-crio.txt",
        "v2-cgroupfs.txt",
        "v2-cgroup-namespace.txt",
        "v2-kubelet-nested.txt",
    ],
)
def test_pod_and_container_from_every_layout(fixture: str) -> None:
    text = (FIXTURES / fixture).read_text()
    assert parse_cgroup(text) == CgroupRef(pod_uid=POD, container_id=CONTAINER)


def test_a_process_in_the_pod_cgroup_itself_has_no_container() -> None:
    text = (FIXTURES / "v2-pod-level-only.txt").read_text()
    assert parse_cgroup(text) == CgroupRef(pod_uid=POD, container_id=None)


def test_a_static_pod_is_named_by_its_config_hash() -> None:
    text = (FIXTURES / "v2-static-pod.txt").read_text()
    ref = parse_cgroup(text)
    assert ref == CgroupRef(pod_uid="0a1b2c3d4e5f60718293a4b5c6d7e8f9", container_id=CONTAINER)


@pytest.mark.parametrize(
    "fixture",
    ["v2-host-service.txt", "v1-host-docker-not-k8s.txt", "v2-user-session.txt"],
)
def test_processes_outside_kubernetes_have_no_pod(fixture: str) -> None:
    assert parse_cgroup((FIXTURES / fixture).read_text()) is None


def test_a_line_naming_the_container_wins_over_a_pod_level_line() -> None:
    text = (
        f"3:cpu:/kubepods/burstable/pod{POD}\n2:memory:/kubepods/burstable/pod{POD}/{CONTAINER}\n"
    )
    assert parse_cgroup(text) == CgroupRef(pod_uid=POD, container_id=CONTAINER)


def test_malformed_text_has_no_pod() -> None:
    assert parse_cgroup("") is None
    assert parse_cgroup("garbage without colons\n") is None
    # A path mentioning kubepods but no pod segment.
    assert parse_cgroup("0::/kubepods.slice/kubepods-burstable.slice\n") is None


def test_host_proc_reads_under_its_root(tmp_path: Path) -> None:
    (tmp_path / "4242").mkdir()
    (tmp_path / "4242" / "cgroup").write_text((FIXTURES / "v2-cgroupfs.txt").read_text())
    proc = HostProc(tmp_path)
    assert proc.pod_of(4242) == CgroupRef(pod_uid=POD, container_id=CONTAINER)
    # A process that exited between NVML's list and the read.
    assert proc.pod_of(4243) is None
