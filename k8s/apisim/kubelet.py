"""A simulated kube-scheduler and kubelet over a :class:`~k8s.apisim.store.Store`.

One :meth:`KubeletSim.step` binds ungated pods to a node that satisfies their required node
affinity, node selector and free GPUs; starts them; finishes pods whose annotation
``sim.gpupool.io/run-seconds`` has elapsed on the store's clock (exit code from
``sim.gpupool.io/exit-code``, default 0); and confirms the termination of deleted pods on Ready
nodes (a pod on a NotReady node stays terminating until force-deleted, as on a real cluster).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from functools import partial
from typing import Any

from k8s.apisim.store import TERMINAL_PHASES, Obj, Store, parse_timestamp, pod_gpus, timestamp

RUN_SECONDS = "sim.gpupool.io/run-seconds"
EXIT_CODE = "sim.gpupool.io/exit-code"
STOP_SECONDS = "sim.gpupool.io/stop-seconds"


def node_ready(node: Obj) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _expression_matches(expr: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, op, values = expr.get("key", ""), expr.get("operator", ""), expr.get("values") or []
    if op == "In":
        return labels.get(key) in values
    if op == "NotIn":
        return labels.get(key) not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    if op in ("Gt", "Lt") and key in labels and values:
        try:
            left, right = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return left > right if op == "Gt" else left < right
    return False


def affinity_allows(pod: Obj, node: Obj) -> bool:
    """Whether the pod's nodeSelector and required node affinity admit ``node``."""
    spec = pod.get("spec", {})
    labels = node["metadata"].get("labels") or {}
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if not required:
        return True
    fields = {"metadata.name": node["metadata"]["name"]}
    return any(
        all(_expression_matches(e, labels) for e in term.get("matchExpressions") or [])
        and all(_expression_matches(e, fields) for e in term.get("matchFields") or [])
        for term in required.get("nodeSelectorTerms") or []
    )


def _tolerates(pod: Obj, taint: Mapping[str, Any]) -> bool:
    for t in pod.get("spec", {}).get("tolerations") or []:
        if t.get("effect") not in (None, "", taint.get("effect")):
            continue
        if t.get("operator") == "Exists" and t.get("key") in (None, "", taint.get("key")):
            return True
        if t.get("key") == taint.get("key") and t.get("value", "") == taint.get("value", ""):
            return True
    return False


class KubeletSim:
    """Moves pods through their lifecycle on the store's clock, one :meth:`step` at a time."""

    def __init__(self, store: Store, gpu_resource: str = "nvidia.com/gpu") -> None:
        self.store = store
        self.gpu_resource = gpu_resource

    def step(self) -> int:
        """Advance every pod as far as the current time allows; returns how many changed."""
        now = self.store.clock()
        nodes = {n["metadata"]["name"]: n for n in self.store.list("nodes")[0]}
        pods, _ = self.store.list("pods")
        changed = 0
        used: dict[str, int] = {}
        for pod in pods:
            node_name = pod["spec"].get("nodeName")
            if node_name and pod["status"].get("phase") not in TERMINAL_PHASES:
                used[node_name] = used.get(node_name, 0) + pod_gpus(pod, self.gpu_resource)
        for pod in pods:
            meta, spec, status = pod["metadata"], pod["spec"], pod["status"]
            ns, name = meta["namespace"], meta["name"]
            if "deletionTimestamp" in meta:
                node = nodes.get(spec.get("nodeName", ""))
                grace = int(meta.get("deletionGracePeriodSeconds", 0))
                started = parse_timestamp(meta["deletionTimestamp"]) - timedelta(seconds=grace)
                stop = float((meta.get("annotations") or {}).get(STOP_SECONDS, 0))
                if (
                    node is not None
                    and node_ready(node)
                    and now >= started + timedelta(seconds=min(stop, grace))
                ):
                    self.store.remove("pods", ns, name)
                    changed += 1
                continue
            if spec.get("schedulingGates") or status.get("phase") in TERMINAL_PHASES:
                continue
            if not spec.get("nodeName"):
                target = self._choose_node(pod, nodes, used)
                if target is None:
                    continue
                used[target] = used.get(target, 0) + pod_gpus(pod, self.gpu_resource)
                self.store.update_status("pods", ns, name, partial(self._bind, node=target))
                changed += 1
                continue
            run = (meta.get("annotations") or {}).get(RUN_SECONDS)
            start = status.get("startTime")
            if (
                run is not None
                and start
                and now >= parse_timestamp(start) + timedelta(seconds=float(run))
            ):
                code = int((meta.get("annotations") or {}).get(EXIT_CODE, 0))
                self.store.update_status("pods", ns, name, partial(self._finish, exit_code=code))
                changed += 1
        return changed

    def _choose_node(self, pod: Obj, nodes: dict[str, Obj], used: dict[str, int]) -> str | None:
        asked = pod_gpus(pod, self.gpu_resource)
        for name, node in sorted(nodes.items()):
            if node.get("spec", {}).get("unschedulable") or not node_ready(node):
                continue
            taints = node.get("spec", {}).get("taints") or []
            if any(
                t.get("effect") in ("NoSchedule", "NoExecute") and not _tolerates(pod, t)
                for t in taints
            ):
                continue
            allocatable = (node.get("status") or {}).get("allocatable") or {}
            free = int(allocatable.get(self.gpu_resource, 0)) - used.get(name, 0)
            if asked <= free and affinity_allows(pod, node):
                return name
        return None

    def _bind(self, pod: Obj, node: str) -> None:
        now = timestamp(self.store.clock())
        pod["spec"]["nodeName"] = node
        pod["status"].update(
            {
                "phase": "Running",
                "startTime": now,
                "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                    {"type": "Ready", "status": "True", "lastTransitionTime": now},
                ],
                "containerStatuses": [
                    {
                        "name": c["name"],
                        "image": c.get("image", ""),
                        "imageID": "",
                        "ready": True,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": now}},
                    }
                    for c in pod["spec"].get("containers") or []
                ],
            }
        )

    def _finish(self, pod: Obj, exit_code: int) -> None:
        now = timestamp(self.store.clock())
        reason = "Completed" if exit_code == 0 else "Error"
        pod["status"]["phase"] = "Succeeded" if exit_code == 0 else "Failed"
        if exit_code:
            pod["status"]["message"] = f"container exited with code {exit_code}"
        pod["status"]["containerStatuses"] = [
            {
                "name": c["name"],
                "image": c.get("image", ""),
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {
                    "terminated": {"exitCode": exit_code, "reason": reason, "finishedAt": now}
                },
            }
            for c in pod["spec"].get("containers") or []
        ]
