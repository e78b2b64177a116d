"""The controller: one level-based reconcile pass over the cluster, and a thread that runs it.

A pass reads a snapshot of the cluster and the scheduler's view of the requests its pods
belong to, decides with the pure functions of :mod:`k8s.reconcile`, and applies the
differences: node pool sync, tenant namespaces, admission patches, evictions and deletions,
Events, phase feedback and ResourceQuotas. Pod writes go out in parallel. Everything decided
is recomputed from scratch each pass, so a restart (or a lost answer) needs no saved state.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import TypeVar

from k8s.cluster import Cluster, ClusterError, Conflict, EventSpec, NotFound, Refused, Snapshot
from k8s.leader import LeaderElector
from k8s.objects import PodView
from k8s.port import Clock, ObservedNode, RequestView, SchedulerPort, utc_now
from k8s.reconcile.admission import Admit, Hold, admit_ops, admit_request, hostnames
from k8s.reconcile.ending import Evict, ForceDelete, end_pod, next_force_delete, overflow
from k8s.reconcile.feedback import outcome
from k8s.reconcile.inventory import observe_nodes
from k8s.reconcile.requests import Standing, by_request, standing
from k8s.reconcile.tenants import namespaces_to_create, tenant_of_namespace
from k8s.settings import GPU_RESOURCE, MANAGED_BY, TENANT_LABEL, ControllerSettings

log = logging.getLogger(__name__)
T = TypeVar("T")
_DEBOUNCE_S = 0.02  # coalesce bursts of watch events into one pass
_RETRY_MIN_S, _RETRY_MAX_S = 0.2, 10.0


@dataclass
class PassReport:
    """What one reconcile pass did (counts), and when the next one is due."""

    leader: bool = False
    admitted: int = 0
    held: int = 0
    evicted: int = 0
    deleted: int = 0
    events: int = 0
    reports: int = 0
    pool_changed: bool = False
    namespaces_created: int = 0
    quotas_written: int = 0
    errors: list[str] = field(default_factory=list)
    next_wake: datetime | None = None


class Controller:
    """Enforces the scheduler's plan on a cluster: ``start()``/``stop()`` run passes in a
    background thread; ``reconcile_once()`` runs one synchronously (tests, the simulator)."""

    def __init__(
        self,
        port: SchedulerPort,
        cluster: Cluster,
        clock: Clock = utc_now,
        settings: ControllerSettings | None = None,
    ) -> None:
        self.port = port
        self.cluster = cluster
        self.clock = clock
        self.settings = settings or ControllerSettings()
        self.elector = (
            LeaderElector(cluster, self.settings, clock) if self.settings.leader_election else None
        )
        self._pool = ThreadPoolExecutor(
            self.settings.write_workers, thread_name_prefix="gpupool-write"
        )
        self._pass_lock = threading.Lock()
        self._memo_lock = threading.Lock()
        self._events_sent: dict[str, tuple[str, str]] = {}  # pod uid -> last (reason, message)
        self._refused_evictions: dict[str, datetime] = {}  # pod uid -> first refusal
        self._refused_patches: set[tuple[str, str]] = set()  # (uid, resourceVersion)
        self._reported: set[int] = set()
        self._synced_nodes: list[ObservedNode] | None = None
        self._quotas: dict[str, str] = {}
        self._last_full_resync: datetime | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_report: PassReport | None = None
        self.passes = 0

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Start the cluster's watches and the reconcile thread."""
        if self._thread is not None:
            return
        self._stop.clear()
        self.cluster.start()
        self._thread = threading.Thread(target=self._run, name="gpupool-controller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, hand the Lease back and close the cluster connection. A stopped
        controller is finished: build a new one to run again."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if self.elector is not None:
            self.elector.release()
        self._pool.shutdown(wait=True)
        self.cluster.close()

    def wake(self) -> None:
        """Ask for a pass now (the scheduler calls this after it applied a new plan)."""
        self._wake.set()

    def _run(self) -> None:
        retry = _RETRY_MIN_S
        while not self._stop.is_set():
            wait = self.settings.resync_s
            try:
                report = self.reconcile_once()
            except Exception as exc:  # a pass must never kill the thread; retry with back-off
                log.exception("reconcile pass failed: %s", exc)
                report = PassReport(errors=[str(exc)])
            if report.errors:
                wait, retry = min(wait, retry), min(retry * 2, _RETRY_MAX_S)
            else:
                retry = _RETRY_MIN_S
            if report.next_wake is not None:
                due = (report.next_wake - self.clock()).total_seconds()
                wait = min(wait, max(due, 0.0))
            self._sleep(wait)

    def _sleep(self, seconds: float) -> None:
        remaining = seconds
        while remaining > 0 and not self._stop.is_set():
            if self._wake.is_set():
                break
            step = min(remaining, 0.05)
            if self.cluster.wait_for_change(step):
                time.sleep(_DEBOUNCE_S)
                break
            remaining -= step
        self._wake.clear()

    # -- one pass ----------------------------------------------------------------------
    def reconcile_once(self) -> PassReport:
        """Run one full pass; safe to call from any thread (passes never overlap)."""
        with self._pass_lock:
            report = PassReport()
            now = self.clock()
            if self.elector is not None and not self.elector.check():
                report.next_wake = now + timedelta(seconds=self.settings.renew_interval_s)
                self._forget_leadership_memos()
                self.last_report = report
                return report
            report.leader = True
            self._maybe_full_resync(now)
            snap = self.cluster.snapshot()
            self._sync_inventory(snap, report)
            tenants = self.port.tenants()
            self._create_namespaces(tenants, snap, report)
            tenant_of_ns = tenant_of_namespace(snap.namespaces)
            groups = by_request(snap.pods)
            requests = self.port.get_requests(list(groups)) if groups else {}
            self._pods(snap, groups, requests, tenant_of_ns, tenants, now, report)
            self._feedback(groups, requests, report)
            if self.settings.manage_quotas:
                self._sync_quotas(tenant_of_ns, report)
            report.next_wake = self._next_wake(snap, requests, now, report)
            self._prune({p.uid for p in snap.pods}, set(requests))
            self.passes += 1
            self.last_report = report
            if report.admitted or report.evicted or report.deleted:
                log.info(
                    "pass: %d admitted, %d evicted, %d deleted, %d held",
                    report.admitted,
                    report.evicted,
                    report.deleted,
                    report.held,
                )
            return report

    def _maybe_full_resync(self, now: datetime) -> None:
        period = timedelta(seconds=self.settings.full_resync_s)
        if self._last_full_resync is None or now - self._last_full_resync >= period:
            self._last_full_resync = now
            self._synced_nodes = None
            self._quotas.clear()

    def _forget_leadership_memos(self) -> None:
        self._synced_nodes = None
        self._quotas.clear()
        self._last_full_resync = None

    def _sync_inventory(self, snap: Snapshot, report: PassReport) -> None:
        observed = observe_nodes(snap.nodes, self.settings)
        if observed != self._synced_nodes:
            report.pool_changed = self.port.sync_nodes(observed)
            self._synced_nodes = observed

    def _create_namespaces(
        self, tenants: Mapping[str, bool], snap: Snapshot, report: PassReport
    ) -> None:
        for name, tenant in namespaces_to_create(tenants, snap.namespaces, self.settings).items():
            try:
                self.cluster.create_namespace(name, {TENANT_LABEL: tenant, MANAGED_BY: "gpupool"})
                report.namespaces_created += 1
            except Conflict:
                # It exists without our label: claiming someone's namespace is not ours to do.
                log.warning(
                    "namespace %s exists but has no %s=%s label", name, TENANT_LABEL, tenant
                )
            except ClusterError as exc:
                report.errors.append(f"create namespace {name}: {exc}")

    def _pods(
        self,
        snap: Snapshot,
        groups: Mapping[int, list[PodView]],
        requests: Mapping[int, RequestView],
        tenant_of_ns: Mapping[str, str],
        tenants: Mapping[str, bool],
        now: datetime,
        report: PassReport,
    ) -> None:
        node_hosts = hostnames(snap.nodes)
        node_of_host = {h: n for n, h in node_hosts.items()}
        admits: list[Admit] = []
        holds: list[Hold] = []
        endings: list[Evict | ForceDelete] = []
        verdicts: dict[str, Standing] = {}
        for pod in snap.pods:
            verdicts[pod.uid] = standing(pod, requests, tenant_of_ns, tenants, now)
        for rid, pods in groups.items():
            request = requests.get(rid)
            open_pods = [p for p in pods if verdicts[p.uid].open]
            if request is not None and open_pods:
                for d in admit_request(request, open_pods, node_hosts):
                    if isinstance(d, Admit):
                        admits.append(d)
                    else:
                        holds.append(d)
                for pod, why in overflow(request, open_pods, node_of_host):
                    endings.append(Evict(pod, "OutsideReservation", why))
        for pod in snap.pods:
            verdict = verdicts[pod.uid]
            if verdict.open:
                continue
            if pod.gated and not pod.terminating:
                holds.append(
                    Hold(
                        pod,
                        verdict.reason,
                        verdict.message,
                        warning=verdict.reason != "WaitingForReservation",
                    )
                )
            elif pod.namespace in tenant_of_ns:
                decision = end_pod(
                    pod, verdict, now, self._refused_evictions.get(pod.uid), self.settings
                )
                if decision is not None:
                    endings.append(decision)
        with self._memo_lock:
            # A patch the API server refused stays refused until the pod changes.
            admits = [
                a
                for a in admits
                if (a.pod.uid, a.pod.resource_version) not in self._refused_patches
            ]
        report.held = len(holds)
        results = self._parallel(
            [
                *[lambda a=a: self._admit(a) for a in admits],
                *[lambda e=e: self._end(e, now) for e in endings],
            ]
        )
        for kind, error in results:
            if kind == "admitted":
                report.admitted += 1
            elif kind == "evicted":
                report.evicted += 1
            elif kind == "deleted":
                report.deleted += 1
            if error:
                report.errors.append(error)
        events = [
            EventSpec(h.pod, h.reason, h.message, "Warning" if h.warning else "Normal")
            for h in holds
        ]
        self._emit(events, report)

    # -- writes ------------------------------------------------------------------------
    def _parallel(self, jobs: Sequence[Callable[[], T]]) -> list[T]:
        if len(jobs) <= 1:
            return [job() for job in jobs]
        return list(self._pool.map(lambda job: job(), jobs))

    def _admit(self, decision: Admit) -> tuple[str, str | None]:
        pod = decision.pod
        for _ in range(3):
            ops = admit_ops(pod, decision.hostname)
            if ops is None:
                return "", None
            try:
                self.cluster.patch_pod(pod, ops)
            except NotFound:
                return "", None
            except (Conflict, Refused) as exc:
                # A stale pod (or an answer lost after the write happened): read it again and
                # decide on the fresh copy; the API answers a failed patch test with 422.
                if isinstance(exc, Refused) and exc.code != 422:
                    return "", f"admit {pod.namespace}/{pod.name}: {exc}"
                try:
                    fresh = self.cluster.get_pod(pod.namespace, pod.name)
                except ClusterError as read_error:
                    return "", f"admit {pod.namespace}/{pod.name}: {read_error}"
                if fresh is None or fresh.uid != pod.uid or not fresh.gated:
                    return "", None
                if isinstance(exc, Refused) and fresh.resource_version == pod.resource_version:
                    with self._memo_lock:
                        self._refused_patches.add((pod.uid, pod.resource_version))
                    self._emit(
                        [
                            EventSpec(
                                pod,
                                "AdmissionRefused",
                                f"the API server refused to admit the pod: {exc}",
                                "Warning",
                            )
                        ],
                        None,
                    )
                    return "", f"admit {pod.namespace}/{pod.name}: {exc}"
                pod = fresh
                continue
            except ClusterError as exc:
                return "", f"admit {pod.namespace}/{pod.name}: {exc}"
            self._emit(
                [EventSpec(pod, "Admitted", f"reservation open: pinned to node {decision.node}")],
                None,
            )
            return "admitted", None
        return "", f"admit {pod.namespace}/{pod.name}: kept conflicting"

    def _end(self, decision: Evict | ForceDelete, now: datetime) -> tuple[str, str | None]:
        pod = decision.pod
        where = f"{pod.namespace}/{pod.name}"
        try:
            if isinstance(decision, Evict):
                self.cluster.evict_pod(pod, self.settings.eviction_grace_s)
                with self._memo_lock:
                    self._refused_evictions.pop(pod.uid, None)
                self._emit(
                    [EventSpec(pod, "Evicted", f"{decision.message} ({decision.reason})")], None
                )
                return "evicted", None
            # Past the grace period a pod that is still there is removed for good; one whose
            # eviction is refused gets an ordinary delete first, which no budget can block.
            grace = 0 if pod.terminating else self.settings.eviction_grace_s
            self.cluster.delete_pod(pod, grace)
            self._emit([EventSpec(pod, "Deleted", decision.message, "Warning")], None)
            return "deleted", None
        except NotFound:
            return "", None
        except Refused as exc:
            if isinstance(decision, Evict):
                with self._memo_lock:
                    self._refused_evictions.setdefault(pod.uid, now)
                self._emit([EventSpec(pod, "EvictionRefused", str(exc), "Warning")], None)
            return "", f"end {where}: {exc}"
        except ClusterError as exc:
            return "", f"end {where}: {exc}"

    def _emit(self, events: Iterable[EventSpec], report: PassReport | None) -> None:
        fresh: list[EventSpec] = []
        with self._memo_lock:
            for event in events:
                key = (event.reason, event.message)
                if self._events_sent.get(event.pod.uid) == key:
                    continue
                self._events_sent[event.pod.uid] = key
                fresh.append(event)
        if report is None:
            # Called from a write job already running in the pool: waiting on the pool from
            # inside it could deadlock, so record inline.
            for event in fresh:
                self._record(event)
            return
        jobs: list[Callable[[], int]] = [partial(self._record, e) for e in fresh]
        report.events += sum(self._parallel(jobs))

    def _record(self, event: EventSpec) -> int:
        try:
            self.cluster.create_event(event)
        except ClusterError as exc:
            # Events are best effort: one that failed is sent again on a later pass.
            log.info("event for %s/%s not recorded: %s", event.pod.namespace, event.pod.name, exc)
            with self._memo_lock:
                self._events_sent.pop(event.pod.uid, None)
            return 0
        return 1

    def _feedback(
        self,
        groups: Mapping[int, list[PodView]],
        requests: Mapping[int, RequestView],
        report: PassReport,
    ) -> None:
        for rid, pods in groups.items():
            request = requests.get(rid)
            if request is None or rid in self._reported:
                continue
            result = outcome(request, pods)
            if result is None:
                continue
            if result.succeeded:
                self.port.report_succeeded(rid, result.text)
            else:
                self.port.report_failed(rid, result.text)
            self._reported.add(rid)
            report.reports += 1

    def _sync_quotas(self, tenant_of_ns: Mapping[str, str], report: PassReport) -> None:
        planned = self.port.planned_gpus_by_tenant()
        key = f"requests.{GPU_RESOURCE}"
        for namespace, tenant in sorted(tenant_of_ns.items()):
            hard = str(planned.get(tenant, 0))
            if self._quotas.get(namespace) == hard:
                continue
            try:
                if self.cluster.ensure_quota(
                    namespace, self.settings.quota_name, {key: hard}, {MANAGED_BY: "gpupool"}
                ):
                    report.quotas_written += 1
                self._quotas[namespace] = hard
            except ClusterError as exc:
                report.errors.append(f"quota {namespace}: {exc}")

    def _next_wake(
        self, snap: Snapshot, requests: Mapping[int, RequestView], now: datetime, report: PassReport
    ) -> datetime | None:
        moments: list[datetime] = []
        for request in requests.values():
            for moment in (request.window_start, request.window_end):
                if moment is not None and moment > now:
                    moments.append(moment)
        for pod in snap.pods:
            if pod.terminating and pod.holds_gpus:
                due = next_force_delete(pod, self.settings)
                if due is not None:
                    moments.append(max(due, now))
        for first in self._refused_evictions.values():
            moments.append(
                first
                + timedelta(
                    seconds=self.settings.eviction_grace_s + self.settings.force_delete_after_s
                )
            )
        if self.elector is not None:
            moments.append(now + timedelta(seconds=self.settings.renew_interval_s))
        return min(moments) if moments else None

    def _prune(self, live_pods: set[str], live_requests: set[int]) -> None:
        with self._memo_lock:
            for uid in set(self._events_sent) - live_pods:
                del self._events_sent[uid]
            for uid in set(self._refused_evictions) - live_pods:
                del self._refused_evictions[uid]
            self._refused_patches = {k for k in self._refused_patches if k[0] in live_pods}
            self._reported &= live_requests
