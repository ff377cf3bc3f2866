"""Engine tests (marker `docker`): they need a Docker engine and the project image.

The image is `$QBFL_TEST_IMAGE` (default `qbfl-ci:latest`, what `scripts/ci-docker.sh image` builds);
the tests skip with that hint when the engine or the image is missing. Containers use host
networking only (or none) and are labelled with a per-test project, removed afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest

IMAGE = os.environ.get("QBFL_TEST_IMAGE", "qbfl-ci:latest")


@pytest.fixture(scope="session")
def docker_client() -> object:
    docker = pytest.importorskip("docker")
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.skip(f"no Docker engine answers ({exc})")
    try:
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        pytest.skip(f"image {IMAGE} missing: build it with `scripts/ci-docker.sh image`")
    return client


@pytest.fixture
def project() -> str:
    return f"qbfl-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def compose_v2() -> list[str]:
    """The `docker compose` command (v2), or skip."""
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI")
    result = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if result.returncode != 0 or "version v2" not in result.stdout.replace(
        "version 2", "version v2"
    ):
        pytest.skip("Compose v2 missing (scripts/ci-docker.sh installs it; see docs/containers.md)")
    return ["docker", "compose"]


@pytest.fixture
def cleanup_project(docker_client: object, project: str) -> Iterator[str]:
    from qbfl.orchestrator.docker_backend import DockerNetwork

    yield project
    DockerNetwork(project, image=IMAGE, client=docker_client).down()
