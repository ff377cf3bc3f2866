"""`qbfl-orchestrator k8s`: Kubernetes manifests for a publisher and N nodes (DESIGN.md §8, "beyond one machine").

- publisher: a PersistentVolumeClaim, a Deployment (one replica, `Recreate`, since its volume is
  ReadWriteOnce) and a ClusterIP Service `publisher:50050`.
- nodes: a StatefulSet `node` with a headless Service `node`, so pod `node-7` is reachable as
  `node-7.node:51000`. Every pod runs the same template; a short shell prologue derives the node id
  from the pod's ordinal (`${HOSTNAME##*-}`), so two replicas never share an id. Pods start in
  parallel (`podManagementPolicy: Parallel`): a node only turns ready after genesis, which needs
  all N registered, so ordered start would wait forever. The headless Service publishes addresses
  of pods that are not ready yet, for the same reason (peers dial each other before genesis).
- malicious roles per ordinal: a ConfigMap `qbfl-node-roles` with one key per malicious node
  (`node-7: "bitflip oppose"`), mounted into every pod; the prologue turns the pod's own key into
  `--malicious` flags. Changing roles is an edit of the ConfigMap and a pod restart, not of the
  StatefulSet.
- one PersistentVolumeClaim per node (volumeClaimTemplates) for ledger and keys; `fsGroup` makes
  it writable by the image's non-root user (uid/gid 10001) whatever the storage class.
- probes: readiness through Kubernetes' native gRPC probe (grpc.health.v1: SERVING only after
  genesis is verified); liveness through a TCP check, because a node correctly stays NOT_SERVING
  while it waits for the other N-1 to register, and a gRPC liveness probe would restart it.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from qbfl.orchestrator.roles import role_label
from qbfl.orchestrator.services import (
    DATA_ROOT,
    DEFAULT_IMAGE,
    PUBLISHER_PORT,
    NetworkSettings,
    settings_flags,
)
from qbfl.orchestrator.yaml_writer import Flow, dump_yaml_documents

APP = "qbfl"
NODE_PORT = 51000  # every pod has its own IP, so all nodes listen on one port (probes need one)
UID = 10001  # the image's user (Dockerfile)
ROLES_MOUNT = "/etc/qbfl/roles"
MANIFEST_FILES = ("publisher.yaml", "nodes.yaml")


@dataclass(frozen=True)
class K8sOptions:
    image: str = DEFAULT_IMAGE
    storage: str = "1Gi"  # per node and for the publisher
    storage_class: str | None = None  # None: the cluster's default class
    node_cpu: str = "500m"
    node_memory: str = "1Gi"
    node_memory_limit: str = "3Gi"
    publisher_cpu: str = "250m"
    publisher_memory: str = "512Mi"
    gpus_per_node: int = 1  # with --gpus: nvidia.com/gpu per node pod


def _labels(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": component}


def _security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "fsGroup": UID,
        "fsGroupChangePolicy": "OnRootMismatch",
    }


def _container_security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": Flow(["ALL"])}}


def _pvc_spec(options: K8sOptions) -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": Flow(["ReadWriteOnce"])}
    if options.storage_class is not None:
        spec["storageClassName"] = options.storage_class
    spec["resources"] = {"requests": {"storage": options.storage}}
    return spec


def _grpc_readiness(port: int, period: int) -> dict[str, Any]:
    return {"grpc": {"port": port}, "periodSeconds": period, "failureThreshold": 3}


def _tcp_liveness(port: int) -> dict[str, Any]:
    return {
        "tcpSocket": {"port": port},
        "initialDelaySeconds": 60,
        "periodSeconds": 20,
        "failureThreshold": 6,
    }


def publisher_manifests(settings: NetworkSettings, options: K8sOptions) -> list[dict[str, Any]]:
    task = settings.task
    out = f"{DATA_ROOT}/publisher"
    init = ["qbfl-publisher", "init", "--task", task.task]
    if task.rounds is not None:
        init += ["--rounds", str(task.rounds)]
    init += task.fixed_init_args() + ["--out", out]
    serve = ["qbfl-publisher", "serve", "--dir", out, "--listen", f"0.0.0.0:{PUBLISHER_PORT}"]
    script = f"{shlex.join(init)} && exec {shlex.join(serve)}"
    labels = _labels("publisher")
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "qbfl-publisher", "labels": labels},
        "spec": _pvc_spec(options),
    }
    container = {
        "name": "publisher",
        "image": options.image,
        "imagePullPolicy": "IfNotPresent",
        "command": Flow(["sh", "-c", script]),
        "ports": [{"name": "grpc", "containerPort": PUBLISHER_PORT}],
        "readinessProbe": _grpc_readiness(PUBLISHER_PORT, 5),
        "livenessProbe": _tcp_liveness(PUBLISHER_PORT),
        "resources": {
            "requests": {"cpu": options.publisher_cpu, "memory": options.publisher_memory}
        },
        "securityContext": _container_security(),
        "volumeMounts": [{"name": "data", "mountPath": DATA_ROOT}],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "publisher", "labels": labels},
        "spec": {
            "replicas": 1,
            # The volume is ReadWriteOnce: the old pod must go before the new one mounts it.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "securityContext": _security(),
                    "terminationGracePeriodSeconds": 30,
                    "containers": [container],
                    "volumes": [
                        {"name": "data", "persistentVolumeClaim": {"claimName": "qbfl-publisher"}}
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "publisher", "labels": labels},
        "spec": {
            "selector": labels,
            "ports": [
                {"name": "grpc", "port": PUBLISHER_PORT, "targetPort": "grpc", "protocol": "TCP"}
            ],
        },
    }
    return [pvc, deployment, service]


def node_script(settings: NetworkSettings, *, roles_dir: str = ROLES_MOUNT) -> str:
    """The pod's prologue: node id from the ordinal, roles from the ConfigMap, then exec qbfl-node."""
    extra = [f"--device {settings.device}"]
    if settings.dp:
        extra.append("--dp")
    if settings.log_format is not None:
        extra.append(f"--log-format {settings.log_format}")
    return "\n".join(
        [
            "set -eu",
            "# StatefulSet pod node-7 is node 7: the ordinal is the id, so no two pods share one.",
            'ID="${HOSTNAME##*-}"',
            'case "$ID" in',
            "  ''|*[!0-9]*) echo \"cannot derive a node id from hostname $HOSTNAME\" >&2; exit 64 ;;",
            "esac",
            'MALICIOUS=""',
            f'if [ -f "{roles_dir}/node-$ID" ]; then',
            f'  for role in $(cat "{roles_dir}/node-$ID"); do MALICIOUS="$MALICIOUS --malicious $role"; done',
            "fi",
            'exec qbfl-node start --id "$ID" $MALICIOUS \\',
            f"  --publisher publisher:{PUBLISHER_PORT} --listen 0.0.0.0:{NODE_PORT} \\",
            f'  --advertise "node-$ID.node:{NODE_PORT}" --data-dir "{DATA_ROOT}/node-$ID" \\',
            f"  {' '.join(extra)}",
            "",
        ]
    )


def node_manifests(settings: NetworkSettings, options: K8sOptions) -> list[dict[str, Any]]:
    labels = _labels("node")
    roles = settings.roles
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "qbfl-node-roles", "labels": labels},
        "data": {f"node-{i}": " ".join(r) for i, r in sorted(roles.items())},
    }
    headless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "node", "labels": labels},
        "spec": {
            "clusterIP": "None",
            # Peers dial each other before they are ready (genesis needs all of them).
            "publishNotReadyAddresses": True,
            "selector": labels,
            "ports": [{"name": "grpc", "port": NODE_PORT, "targetPort": "grpc", "protocol": "TCP"}],
        },
    }
    resources: dict[str, Any] = {
        "requests": {"cpu": options.node_cpu, "memory": options.node_memory},
        "limits": {"memory": options.node_memory_limit},
    }
    if settings.gpus:
        resources["limits"]["nvidia.com/gpu"] = options.gpus_per_node
    container = {
        "name": "node",
        "image": options.image,
        "imagePullPolicy": "IfNotPresent",
        "command": Flow(["sh", "-c"]),
        "args": [node_script(settings)],
        "ports": [{"name": "grpc", "containerPort": NODE_PORT}],
        "readinessProbe": _grpc_readiness(NODE_PORT, 10),
        "livenessProbe": _tcp_liveness(NODE_PORT),
        "resources": resources,
        "securityContext": _container_security(),
        "volumeMounts": [
            {"name": "data", "mountPath": DATA_ROOT},
            {"name": "roles", "mountPath": ROLES_MOUNT, "readOnly": True},
        ],
    }
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "node", "labels": labels},
        "spec": {
            "serviceName": "node",
            "replicas": settings.task.nodes,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "securityContext": _security(),
                    "terminationGracePeriodSeconds": 30,
                    "containers": [container],
                    "volumes": [{"name": "roles", "configMap": {"name": "qbfl-node-roles"}}],
                },
            },
            "volumeClaimTemplates": [
                {"metadata": {"name": "data", "labels": labels}, "spec": _pvc_spec(options)}
            ],
        },
    }
    return [configmap, headless, statefulset]


def regenerate_command(settings: NetworkSettings, options: K8sOptions, out: str) -> str:
    words = ["qbfl-orchestrator k8s", *settings_flags(settings)]
    if options.image != DEFAULT_IMAGE:
        words.append(f"--image {options.image}")
    if options.storage_class is not None:
        words.append(f"--storage-class {options.storage_class}")
    words.append(f"--out {out}")
    return " ".join(words)


def render_k8s(
    settings: NetworkSettings, options: K8sOptions | None = None, *, out: str = "k8s"
) -> dict[str, str]:
    """File name → manifest text, for `kubectl apply -f DIR/`."""
    options = options or K8sOptions()
    roles = settings.roles
    malicious = ", ".join(f"node-{i} {role_label(r)}" for i, r in sorted(roles.items())) or "none"
    comment = "\n".join(
        [
            f"QBFL on Kubernetes: {settings.task.nodes} nodes ({settings.task.task}). Generated by:",
            f"  {regenerate_command(settings, options, out)}",
            f"Malicious ({len(roles)}): {malicious}.",
            "Apply with `kubectl apply -f DIR/`; see docs/containers.md (Beyond one machine).",
        ]
    )
    return {
        "publisher.yaml": dump_yaml_documents(
            publisher_manifests(settings, options), comment=comment
        ),
        "nodes.yaml": dump_yaml_documents(node_manifests(settings, options), comment=comment),
    }
