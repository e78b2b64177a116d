"""The Kubernetes side of gpupool: a controller that enforces the plan on pods.

- :mod:`k8s.port`: the seam to the scheduler (:class:`~k8s.port.SchedulerPort`).
- :mod:`k8s.controller`: :class:`~k8s.controller.Controller`, reconcile passes in a thread.
- :mod:`k8s.factory`: :func:`~k8s.factory.build_controller` for a kubeconfig, in-cluster
  config or the simulated cluster.
- :mod:`k8s.cluster`, :mod:`k8s.kube`, :mod:`k8s.simulated`: the cluster port and its two
  adapters (official client; in-process simulation).
- :mod:`k8s.reconcile`: the pure decisions (inventory, tenants, admission, ending, feedback).
- :mod:`k8s.apisim`: API server semantics in memory (store, patches, validation, kubelet).
- :mod:`k8s.fakeapi`: a loopback fake API server for tests and benchmarks.
- ``k8s/manifests/``: kustomize manifests for a real cluster.
"""
