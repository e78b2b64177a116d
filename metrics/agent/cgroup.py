"""From a host PID to the Kubernetes pod (and container) it runs in, via ``/proc/<pid>/cgroup``.

NVML reports host PIDs, so the agent reads the host's ``/proc`` (mounted into the DaemonSet,
e.g. at ``/host/proc``). The kubelet names a pod's cgroup after the pod UID; the layout
depends on the cgroup version and the kubelet's cgroup driver:

- cgroupfs driver: ``/kubepods/burstable/pod<uid>/<container-id>`` (v1 and v2);
- systemd driver: ``/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid with
  underscores>.slice/cri-containerd-<container-id>.scope`` (or ``docker-``, ``crio-``);
- containerd on some systemd set-ups: ``...-pod<uid>.slice:cri-containerd:<container-id>``;
- seen from inside a cgroup namespace the path may start with ``/../..``.

Static (mirror) pods are named by a 32-hex config hash instead of a UUID.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_POD = re.compile(
    r"pod(?P<uid>[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"
    r"|[0-9a-f]{32})(?=\.slice|/|:|$)"
)
_CONTAINER = re.compile(r"(?<![0-9a-f])(?P<id>[0-9a-f]{64})(?![0-9a-f])")


@dataclass(frozen=True, slots=True)
class CgroupRef:
    """The pod UID (dashed form, or a static pod's hash) and, when known, the container ID."""

    pod_uid: str
    container_id: str | None


def parse_cgroup(text: str) -> CgroupRef | None:
    """The pod a process belongs to, from the text of its ``/proc/<pid>/cgroup``.

    ``None`` when the process is not in a Kubernetes pod (a host process, a system daemon).
    Every hierarchy of a pod's process names the same pod; one that also names the
    container wins over one that does not.
    """
    found: CgroupRef | None = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3 or "kubepods" not in parts[2]:
            continue
        path = parts[2]
        pod = _POD.search(path)
        if pod is None:
            continue
        uid = pod.group("uid").replace("_", "-")
        ids = _CONTAINER.findall(path[pod.end() :])
        ref = CgroupRef(pod_uid=uid, container_id=ids[-1] if ids else None)
        if ref.container_id is not None:
            return ref
        found = found or ref
    return found


class HostProc:
    """Reads process cgroups under a ``/proc`` root (the host's, when run in a pod)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def pod_of(self, pid: int) -> CgroupRef | None:
        """The pod of host process ``pid``; ``None`` if it is not in a pod or has exited."""
        try:
            text = (self.root / str(pid) / "cgroup").read_text(encoding="utf-8", errors="replace")
        except (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError):
            # The process ended between NVML's list and this read, or is not visible to us.
            return None
        return parse_cgroup(text)
