"""Leader election with a ``coordination.k8s.io`` Lease, so one replica acts at a time.

Like client-go's leader election, expiry is judged by this replica's own clock: a Lease held
by someone else is taken over only after its record has not changed for ``leaseDurationSeconds``
as seen here, so clock skew between machines does not matter. A leader that cannot renew for
a whole lease duration stops acting before anyone else may take over.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timedelta

from k8s.cluster import Cluster, ClusterError, LeaseRecord
from k8s.port import Clock
from k8s.settings import ControllerSettings

log = logging.getLogger(__name__)


class LeaderElector:
    def __init__(self, cluster: Cluster, settings: ControllerSettings, clock: Clock) -> None:
        self._cluster = cluster
        self._settings = settings
        self._clock = clock
        self._observed: LeaseRecord | None = None
        self._observed_at: datetime | None = None
        self._renewed_at: datetime | None = None
        self.transitions_seen = 0

    @property
    def identity(self) -> str:
        return self._settings.identity

    def is_leader(self) -> bool:
        """True while our last successful renewal is younger than the lease duration."""
        if self._renewed_at is None:
            return False
        age = self._clock() - self._renewed_at
        return age < timedelta(seconds=self._settings.lease_duration_s)

    def due(self) -> bool:
        """Whether it is time to try again (acquire, or renew every ``renew_interval_s``)."""
        if self._renewed_at is None:
            return True
        interval = timedelta(seconds=self._settings.renew_interval_s)
        return self._clock() - self._renewed_at >= interval

    def check(self) -> bool:
        """Acquire or renew the Lease if due; returns whether we lead now."""
        if not self.due():
            return self.is_leader()
        try:
            self._try()
        except ClusterError as exc:
            log.warning("leader election: %s", exc)
        return self.is_leader()

    def release(self) -> None:
        """Give the Lease up on shutdown so another replica takes over without waiting."""
        if not self.is_leader() or self._observed is None:
            return
        record = replace(self._observed, holder="", duration_s=1, renew_time=self._clock())
        try:
            self._cluster.update_lease(
                self._settings.lease_namespace, self._settings.lease_name, record
            )
        except ClusterError as exc:
            log.info("leader election: release failed: %s", exc)
        self._renewed_at = None

    def _try(self) -> None:
        s = self._settings
        now = self._clock()
        current = self._cluster.get_lease(s.lease_namespace, s.lease_name)
        duration = max(1, round(s.lease_duration_s))
        if current is None:
            record = LeaseRecord(self.identity, duration, now, now, 0)
            self._observe(self._cluster.create_lease(s.lease_namespace, s.lease_name, record), now)
            self._renewed_at = now
            log.info("leader election: %s created the lease and leads", self.identity)
            return
        if current != self._observed:
            self._observe(current, now)
        if current.holder == self.identity:
            record = replace(current, renew_time=now, duration_s=duration)
        else:
            assert self._observed_at is not None
            expires = self._observed_at + timedelta(seconds=max(current.duration_s, 1))
            if current.holder and now < expires:
                self._renewed_at = None
                return
            record = replace(
                current,
                holder=self.identity,
                duration_s=duration,
                acquire_time=now,
                renew_time=now,
                transitions=current.transitions + 1,
            )
            log.info("leader election: %s takes over from %r", self.identity, current.holder)
            self.transitions_seen += 1
        try:
            updated = self._cluster.update_lease(s.lease_namespace, s.lease_name, record)
        except ClusterError:
            self._renewed_at = self._renewed_at if current.holder == self.identity else None
            raise
        self._observe(updated, now)
        self._renewed_at = now

    def _observe(self, record: LeaseRecord, now: datetime) -> None:
        self._observed = record
        self._observed_at = now
