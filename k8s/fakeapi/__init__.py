"""A Kubernetes API fake on loopback: TEST INFRASTRUCTURE, not a cluster.

:class:`FakeApiServer` serves the REST API of :class:`k8s.apisim.store.Store` over HTTP on
127.0.0.1 so that the official ``kubernetes`` client talks to it unchanged (lists, watches with
``resourceVersion`` and 410 Gone, the three patch formats, 409 on stale writes, the Eviction
subresource, Leases), with injectable faults (:class:`Fault`). The test suite and
``gpupool bench k8s`` use it; it is never a substitute for a real API server in production.
"""

from k8s.fakeapi.faults import Fault, FaultPlan
from k8s.fakeapi.server import FakeApiServer

__all__ = ["FakeApiServer", "Fault", "FaultPlan"]
