"""The manifests: valid against the Kubernetes schemas (offline), complete, least-privilege,
and an admission policy whose CEL does what it says (evaluated with a CEL library)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import cel
import jsonschema
import kubernetes_validate
import pytest
import yaml

from k8s.settings import GATE, REQUEST_LABEL, settings_from_env

MANIFESTS = Path(__file__).resolve().parents[2] / "k8s" / "manifests"
K8S_VERSION = "1.31.0"  # the oldest minor we promise (ValidatingAdmissionPolicy v1 is 1.30+)
CONTROLLER = "system:serviceaccount:gpupool-system:gpupool-controller"


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def all_documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(MANIFESTS.rglob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs.extend(documents(path))
    return docs


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in all_documents() if d["kind"] == kind]


# The subset of the Prometheus Operator's ServiceMonitor CRD (monitoring.coreos.com/v1) that
# these manifests use; unknown fields are refused so that a typo cannot slip through.
SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object",
                    "properties": {
                        "matchLabels": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        }
                    },
                },
                "namespaceSelector": {"type": "object"},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "scheme": {"enum": ["http", "https"]},
                            "relabelings": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {
                                        "sourceLabels": {
                                            "type": "array",
                                            "items": {"type": "string"},
                                        },
                                        "targetLabel": {"type": "string"},
                                        "action": {"type": "string"},
                                        "regex": {"type": "string"},
                                        "replacement": {"type": "string"},
                                    },
                                },
                            },
                        },
                        "required": ["port"],
                    },
                },
            },
        },
    },
}


@pytest.mark.parametrize(
    "doc", all_documents(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}"
)
def test_every_manifest_is_valid(doc: dict[str, Any]) -> None:
    if doc["kind"] == "ServiceMonitor":
        jsonschema.validate(doc, SERVICE_MONITOR_SCHEMA)
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_schema_check_catches_mistakes() -> None:
    deployment = copy.deepcopy(by_kind("Deployment")[0])
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    monitor = copy.deepcopy(by_kind("ServiceMonitor")[0])
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(monitor, SERVICE_MONITOR_SCHEMA)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = documents(MANIFESTS / "kustomization.yaml")[0]
    listed = set(kustomization["resources"])
    present = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    kinds = {d["kind"] for f in listed for d in documents(MANIFESTS / f)}
    assert kinds >= {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ConfigMap",
        "Deployment",
        "Service",
        "ServiceMonitor",
        "DaemonSet",
    }


def test_rbac_is_least_privilege() -> None:
    roles = {r["metadata"]["name"]: r for r in by_kind("ClusterRole")}
    assert set(roles) == {"gpupool-controller", "gpupool-agent"}
    (agent_rule,) = roles["gpupool-agent"]["rules"]
    assert agent_rule["resources"] == ["pods"] and agent_rule["verbs"] == ["list"]
    role = roles["gpupool-controller"]
    grants = {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    assert all("*" not in r and "*" not in v for r, v in grants)
    assert not any(r in ("secrets", "configmaps") for r, _ in grants)
    assert ("pods/eviction", "create") in grants and ("pods", "patch") in grants
    assert ("pods", "update") not in grants and ("nodes", "patch") not in grants
    (lease_role,) = by_kind("Role")
    named = [r for r in lease_role["rules"] if "get" in r["verbs"]]
    assert named and named[0]["resourceNames"] == ["gpupool-controller"]
    subjects = [
        s for b in by_kind("ClusterRoleBinding") + by_kind("RoleBinding") for s in b["subjects"]
    ]
    assert {(s["namespace"], s["name"]) for s in subjects} == {
        ("gpupool-system", "gpupool-controller"),
        ("gpupool-system", "gpupool-agent"),
    }


def test_deployment_shape() -> None:
    (deployment,) = by_kind("Deployment")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert spec["replicas"] == 2
    assert container["readinessProbe"] and container["livenessProbe"]
    database = next(e for e in container["env"] if e["name"] == "GPUPOOL_DATABASE_URL")
    assert database["valueFrom"]["secretKeyRef"] == {"name": "gpupool-database", "key": "url"}
    namespace = deployment["metadata"]["namespace"]
    assert f"system:serviceaccount:{namespace}:{pod['serviceAccountName']}" == CONTROLLER
    tokens = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container["env"]
        if e["name"] in ("GPUPOOL_OPERATOR_TOKEN", "GPUPOOL_AGENT_TOKEN")
    }
    assert tokens == {
        "GPUPOOL_OPERATOR_TOKEN": {"name": "gpupool-tokens", "key": "operator"},
        "GPUPOOL_AGENT_TOKEN": {"name": "gpupool-tokens", "key": "agent"},
    }
    (daemonset,) = by_kind("DaemonSet")
    agent_pod = daemonset["spec"]["template"]["spec"]
    args = agent_pod["containers"][0]["args"]
    assert args[0] == "agent"
    # the options the agent needs on a node: its server, its token, the host's /proc
    assert (
        "--host-proc=/host/proc" in args and "--token-file=/var/run/secrets/gpupool/agent" in args
    )
    mounts = {m["mountPath"] for m in agent_pod["containers"][0]["volumeMounts"]}
    assert {"/host/proc", "/var/run/secrets/gpupool"} <= mounts


def test_configmap_feeds_controller_settings() -> None:
    (configmap,) = by_kind("ConfigMap")
    settings = settings_from_env(configmap["data"])
    assert settings.gpu_classes["NVIDIA-H100-80GB-HBM3"] == "H100-80GB"
    assert settings.eviction_grace_s == 30 and settings.create_namespaces is False
    with pytest.raises(ValueError, match="GPUPOOL_K8S_MANAGE_QUOTAS"):
        settings_from_env({"GPUPOOL_K8S_MANAGE_QUOTAS": "maybe"})
    with pytest.raises(ValueError, match="GPUPOOL_K8S_GPU_CLASSES"):
        settings_from_env({"GPUPOOL_K8S_GPU_CLASSES": "[1]"})


# -- the admission policy's CEL ------------------------------------------------------------
POLICY = next(d for d in by_kind("ValidatingAdmissionPolicy"))


def gpu_pod(
    gated: bool = True, label: str | None = "42", gpus: bool = True, init_gpu: bool = False
) -> dict[str, Any]:
    resources = {"limits": {"nvidia.com/gpu": "1"}} if gpus else {}
    spec: dict[str, Any] = {"containers": [{"name": "c", "resources": resources}]}
    if init_gpu:
        spec["initContainers"] = [{"name": "i", "resources": {"requests": {"nvidia.com/gpu": "1"}}}]
    if gated:
        spec["schedulingGates"] = [{"name": "other"}, {"name": GATE}]
    meta: dict[str, Any] = {"name": "p"}
    if label is not None:
        meta["labels"] = {REQUEST_LABEL: label}
    return {"metadata": meta, "spec": spec}


def admit(
    operation: str, obj: dict[str, Any], old: dict[str, Any] | None = None, user: str = "alice"
) -> list[str]:
    """Evaluate the policy as the API server would: [] if allowed, else the messages."""
    context: dict[str, Any] = {
        "object": obj,
        "oldObject": old,
        "request": {"operation": operation, "userInfo": {"username": user}},
    }
    for condition in POLICY["spec"]["matchConditions"]:
        if not cel.evaluate(condition["expression"], context):
            return []  # not a GPU pod: the policy does not apply
    variables: dict[str, Any] = {}
    for variable in POLICY["spec"]["variables"]:
        variables[variable["name"]] = cel.evaluate(
            variable["expression"], {**context, "variables": variables}
        )
    context["variables"] = variables
    return [
        v["message"]
        for v in POLICY["spec"]["validations"]
        if not cel.evaluate(v["expression"], context)
    ]


def test_policy_create_rules() -> None:
    assert admit("CREATE", gpu_pod()) == []
    assert "scheduling gate" in admit("CREATE", gpu_pod(gated=False))[0]
    assert "gpupool.io/request=<request id>" in admit("CREATE", gpu_pod(label=None))[0]
    assert admit("CREATE", gpu_pod(label="4x2")) != []
    assert admit("CREATE", gpu_pod(gated=False, label=None, gpus=False)) == []  # no GPUs
    assert admit("CREATE", gpu_pod(gated=False, gpus=False, init_gpu=True)) != []


def test_policy_update_rules() -> None:
    old = gpu_pod()
    ungated = copy.deepcopy(old)
    ungated["spec"]["schedulingGates"] = [{"name": "other"}]
    assert "only the gpupool controller" in admit("UPDATE", ungated, old)[0]
    assert admit("UPDATE", ungated, old, user=CONTROLLER) == []
    relabelled = copy.deepcopy(old)
    relabelled["metadata"]["labels"][REQUEST_LABEL] = "43"
    assert "cannot be changed" in admit("UPDATE", relabelled, old, user=CONTROLLER)[0]
    other_gate_gone = copy.deepcopy(old)
    other_gate_gone["spec"]["schedulingGates"] = [{"name": GATE}]
    assert admit("UPDATE", other_gate_gone, old) == []  # other gates are not ours


def test_policy_binding_targets_tenant_namespaces() -> None:
    (binding,) = by_kind("ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == POLICY["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    (expr,) = binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"]
    assert expr == {"key": "gpupool.io/tenant", "operator": "Exists"}
    assert POLICY["spec"]["failurePolicy"] == "Fail"


def test_example_tenant_pod_passes_the_policy() -> None:
    docs = documents(MANIFESTS / "examples" / "tenant.yaml")
    namespace = next(d for d in docs if d["kind"] == "Namespace")
    pod = next(d for d in docs if d["kind"] == "Pod")
    assert "gpupool.io/tenant" in namespace["metadata"]["labels"]
    assert admit("CREATE", pod) == []
