"""Which pods use which GPU: NVML's processes, through their cgroups, to pods.

The result, a :class:`Snapshot`, is what the ``/metrics`` collector and the usage samples
are built from; it is immutable, so the scrape thread can read the latest one while the
sampling thread builds the next.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from metrics.agent.cgroup import HostProc
from metrics.agent.model import GpuProcess, NodeReading
from metrics.agent.pods import PodDirectory

# A device is a whole GPU (gpu index, None) or a MIG instance (gpu index, GPU instance id).
DeviceKey = tuple[int, int | None]


@dataclass(frozen=True, slots=True)
class PodUse:
    """One container's use of one device. Names are empty when the pod is not (yet) known."""

    pod_uid: str
    namespace: str
    pod: str
    container: str
    request_id: int | None
    used_bytes: int | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A node reading with the pods on each device, sorted by namespace, pod, container."""

    reading: NodeReading
    pods: Mapping[DeviceKey, tuple[PodUse, ...]] = field(default_factory=dict)

    def pods_on(self, key: DeviceKey) -> tuple[PodUse, ...]:
        return self.pods.get(key, ())


class PodAttributor:
    """Maps processes to pods with the host's ``/proc`` and a :class:`PodDirectory`."""

    def __init__(self, proc: HostProc, directory: PodDirectory) -> None:
        self._proc = proc
        self._directory = directory

    def snapshot(self, reading: NodeReading) -> Snapshot:
        """Attribute every device's processes in ``reading``."""
        pods: dict[DeviceKey, tuple[PodUse, ...]] = {}
        for gpu in reading.gpus:
            if gpu.processes:
                pods[(gpu.index, None)] = self.uses(gpu.processes)
            for mig in gpu.mig:
                if mig.processes:
                    pods[(gpu.index, mig.gpu_instance_id)] = self.uses(mig.processes)
        return Snapshot(reading=reading, pods=pods)

    def uses(self, processes: Iterable[GpuProcess]) -> tuple[PodUse, ...]:
        """The containers behind ``processes``, memory summed per container.

        Processes outside any pod (host daemons, or ones that already exited) are left out.
        """
        merged: dict[tuple[str, str], PodUse] = {}
        for process in processes:
            ref = self._proc.pod_of(process.pid)
            if ref is None:
                continue
            info = self._directory.lookup(ref.pod_uid)
            container = info.container_name(ref.container_id) if info else ""
            key = (ref.pod_uid, container)
            earlier = merged.get(key)
            used = _add(earlier.used_bytes if earlier else None, process.used_bytes)
            merged[key] = PodUse(
                pod_uid=ref.pod_uid,
                namespace=info.namespace if info else "",
                pod=info.name if info else "",
                container=container,
                request_id=info.request_id if info else None,
                used_bytes=used,
            )
        return tuple(
            sorted(merged.values(), key=lambda u: (u.namespace, u.pod, u.container, u.pod_uid))
        )


def _add(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b
