"""`qbfl-orchestrator k8s`: manifests pass the Kubernetes schemas, and the pod prologue derives ids and roles."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from qbfl.orchestrator.cli import main
from qbfl.orchestrator.k8s import NODE_PORT, node_script, render_k8s
from qbfl.orchestrator.roles import DEFAULT_MALICIOUS_SPEC, parse_malicious_spec
from qbfl.orchestrator.services import NetworkSettings, TaskSettings

# gRPC probes are GA since 1.27; validate against an old and the newest schemas the package has.
K8S_VERSIONS = ("1.27.0", kubernetes_validate.utils.latest_version())


def _documents(files: dict[str, str]) -> list[dict[str, Any]]:
    return [doc for text in files.values() for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(scope="module")
def default_files() -> dict[str, str]:
    settings = NetworkSettings(malicious=parse_malicious_spec(DEFAULT_MALICIOUS_SPEC), gpus=True)
    return render_k8s(settings)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_pass_strict_schema_validation(
    default_files: dict[str, str], version: str
) -> None:
    docs = _documents(default_files)
    assert [d["kind"] for d in docs] == [
        "PersistentVolumeClaim",
        "Deployment",
        "Service",
        "ConfigMap",
        "Service",
        "StatefulSet",
    ]
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_statefulset_design(default_files: dict[str, str]) -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for d in _documents(default_files)}
    sts = docs[("StatefulSet", "node")]
    spec = sts["spec"]
    assert spec["replicas"] == 50
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["serviceName"] == "node"
    headless = docs[("Service", "node")]["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["fsGroup"] == 10001
    container = pod["containers"][0]
    assert container["readinessProbe"]["grpc"] == {"port": NODE_PORT}
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["volumeClaimTemplates"][0]["spec"]["accessModes"] == ["ReadWriteOnce"]
    roles = NetworkSettings(malicious=parse_malicious_spec(DEFAULT_MALICIOUS_SPEC)).roles
    data = docs[("ConfigMap", "qbfl-node-roles")]["data"]
    assert data == {f"node-{i}": " ".join(r) for i, r in sorted(roles.items())}
    publisher = docs[("Deployment", "publisher")]["spec"]
    assert publisher["strategy"] == {"type": "Recreate"}
    assert publisher["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"] == {
        "port": 50050
    }


def _run_prologue(
    tmp_path: Path, hostname: str, roles: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    roles_dir = tmp_path / "roles"
    roles_dir.mkdir(exist_ok=True)
    for name, text in roles.items():
        (roles_dir / name).write_text(text)
    fake = tmp_path / "qbfl-node"
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    settings = NetworkSettings(task=TaskSettings(nodes=8), dp=True)
    script = node_script(settings, roles_dir=str(roles_dir))
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}", "HOSTNAME": hostname}
    return subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True)


def test_pod_prologue_derives_id_and_roles(tmp_path: Path) -> None:
    result = _run_prologue(tmp_path, "node-7", {"node-7": "bitflip oppose", "node-3": "labelflip"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "start",
        "--id",
        "7",
        "--malicious",
        "bitflip",
        "--malicious",
        "oppose",
        "--publisher",
        "publisher:50050",
        "--listen",
        "0.0.0.0:51000",
        "--advertise",
        "node-7.node:51000",
        "--data-dir",
        "/var/lib/qbfl/node-7",
        "--device",
        "auto",
        "--dp",
    ]
    honest = _run_prologue(tmp_path, "node-12", {})
    assert "--malicious" not in honest.stdout and "--id 12" in honest.stdout


def test_pod_prologue_refuses_a_hostname_without_ordinal(tmp_path: Path) -> None:
    result = _run_prologue(tmp_path, "publisher-abc", {})
    assert result.returncode == 64
    assert "cannot derive a node id" in result.stderr


def test_cli_writes_the_files(tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    result = CliRunner().invoke(
        main, ["k8s", "--nodes", "9", "--malicious", "2:labelflip,1:equivocate", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["nodes.yaml", "publisher.yaml"]
    docs = [d for p in sorted(out.iterdir()) for d in yaml.safe_load_all(p.read_text()) if d]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)
    again = tmp_path / "again"
    CliRunner().invoke(
        main,
        ["k8s", "--nodes", "9", "--malicious", "2:labelflip,1:equivocate", "--out", str(again)],
    )
    for name in ("nodes.yaml", "publisher.yaml"):
        first = (out / name).read_text().replace(str(out), "DIR")
        assert first == (again / name).read_text().replace(str(again), "DIR")


def test_stdout_holds_every_manifest() -> None:
    result = CliRunner().invoke(main, ["k8s", "--nodes", "4", "--malicious", "none", "--out", "-"])
    assert result.exit_code == 0, result.output
    kinds = [d["kind"] for d in yaml.safe_load_all(result.output) if d]
    assert kinds == [
        "PersistentVolumeClaim",
        "Deployment",
        "Service",
        "ConfigMap",
        "Service",
        "StatefulSet",
    ]
