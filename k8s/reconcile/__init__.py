"""Reconcilers: pure functions from what the cluster and the scheduler say to what to do.

Each module decides one concern and returns values (``Admit``, ``Hold``, ``Evict``...) that
carry their reason; :class:`k8s.controller.Controller` applies them. Being pure, they are
tested on plain data, and being level-based, running them twice on the same state decides the
same thing, so every write is idempotent.
"""
