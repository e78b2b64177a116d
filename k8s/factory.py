"""Builds a :class:`~k8s.controller.Controller` for a kubeconfig, in-cluster config, or the
simulated cluster (the embedded default of ``gpupool serve`` and the demo)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from kubernetes import client, config

from k8s.controller import Controller
from k8s.kube import KubeCluster
from k8s.port import Clock, SchedulerPort, utc_now
from k8s.settings import ControllerSettings
from k8s.simulated import SimNode, SimulatedCluster


def api_client(
    kubeconfig: str | None = None, *, in_cluster: bool = False, context: str | None = None
) -> client.ApiClient:
    """An official-client ``ApiClient`` from a kubeconfig file or the pod's service account."""
    configuration = client.Configuration()
    if in_cluster:
        try:
            config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
        except config.ConfigException as exc:
            raise ValueError(f"in-cluster config: {exc} (is this running in a pod?)") from exc
        return client.ApiClient(configuration)
    if kubeconfig is not None and not Path(kubeconfig).expanduser().is_file():
        raise ValueError(f"kubeconfig: no such file: {kubeconfig}")
    try:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
    except (config.ConfigException, OSError, ValueError) as exc:
        raise ValueError(f"kubeconfig {kubeconfig or '(default)'}: {exc}") from exc
    return client.ApiClient(configuration)


def build_controller(
    port: SchedulerPort,
    *,
    kubeconfig: str | None = None,
    in_cluster: bool = False,
    context: str | None = None,
    inventory: Sequence[SimNode] = (),
    clock: Clock = utc_now,
    settings: ControllerSettings | None = None,
) -> Controller:
    """A controller on a real cluster when ``kubeconfig`` or ``in_cluster`` is given, else on
    a :class:`SimulatedCluster` holding ``inventory``.

    In the simulation there is one process and no installer, so leader election is off and
    tenant namespaces are created by the controller.
    """
    if kubeconfig is not None or in_cluster:
        cluster = KubeCluster(api_client(kubeconfig, in_cluster=in_cluster, context=context))
        return Controller(port, cluster, clock, settings or ControllerSettings())
    simulated = SimulatedCluster(inventory, clock=clock)
    base = settings or ControllerSettings()
    sim_settings = dataclasses.replace(base, leader_election=False, create_namespaces=True)
    return Controller(port, simulated, clock, sim_settings)
