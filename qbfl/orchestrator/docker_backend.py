"""Docker SDK primitives for `qbfl-orchestrator up --backend docker`: image, containers, logs, faults, memory.

`DockerNetwork` starts the services of `services.plan_network` as containers of one project, every
container on the host's network (loopback, one port per service: plan with `network="host"` and a
base port), with Docker's init as PID 1 and a named volume per service at the image's data
directory. Everything it creates carries the label `qbfl.project=<project>`, so `down` (even from
another process) finds and removes exactly that. It never creates a Docker network: on machines
whose engine runs without a bridge (docs/containers.md) host networking is the only safe choice.
The image itself is built by `docker_image.build_image`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from qbfl.orchestrator.docker_image import DockerBackendError, ImageBuild, build_image
from qbfl.orchestrator.memory import MemoryUsage, pss_of
from qbfl.orchestrator.services import DATA_ROOT, LABEL_PROJECT, LABEL_SERVICE, ServiceSpec

LABEL_VOLUME_OF = "qbfl.volume-of"
_NS = 1_000_000_000  # the engine's healthcheck durations are nanoseconds


class DockerNetwork:
    """The containers and volumes of one project on one Docker engine."""

    def __init__(self, project: str, *, image: str, client: Any | None = None) -> None:
        if not project or not project.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"project name {project!r}: use letters, digits, - and _")
        self.project = project
        self.image = image
        self._client = client

    # --- engine and image ---------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            import docker

            try:
                self._client = docker.from_env(timeout=120)
                self._client.ping()
            except docker.errors.DockerException as exc:
                raise DockerBackendError(
                    f"cannot reach the Docker engine ({exc}); is dockerd running and is "
                    "DOCKER_HOST (or /var/run/docker.sock) right?"
                ) from exc
        return self._client

    def image_exists(self, tag: str | None = None) -> bool:
        import docker

        try:
            self.client.images.get(tag or self.image)
        except docker.errors.ImageNotFound:
            return False
        return True

    def ensure_image(
        self,
        build: ImageBuild,
        *,
        rebuild: bool = False,
        on_log: Callable[[str], None] | None = None,
    ) -> str:
        """The image id of `build.tag`, building it first if it is missing (or `rebuild`)."""
        if build.tag != self.image:
            raise ValueError(f"build tag {build.tag} is not this network's image {self.image}")
        if not rebuild and self.image_exists():
            return str(self.client.images.get(self.image).id)
        return build_image(self.client, build, on_log=on_log)

    # --- containers -------------------------------------------------------------------------------
    def container_name(self, service: str) -> str:
        return f"{self.project}-{service}"

    def volume_name(self, volume: str) -> str:
        return f"{self.project}-{volume}"

    def _labels(self, spec: ServiceSpec) -> dict[str, str]:
        return {**spec.labels, LABEL_PROJECT: self.project, LABEL_SERVICE: spec.name}

    def create(self, spec: ServiceSpec, *, start: bool = True) -> Any:
        """Create (and start) the container of one service, with its volume."""
        import docker

        volume = self.volume_name(spec.volume)
        try:
            self._ensure_volume(volume, spec.name)
            kwargs: dict[str, Any] = {}
            if spec.gpu:
                kwargs["device_requests"] = [
                    docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])
                ]
            container = self.client.containers.create(
                self.image,
                command=list(spec.command),
                name=self.container_name(spec.name),
                environment=dict(spec.environment),
                labels=self._labels(spec),
                network_mode="host",
                init=True,
                volumes={volume: {"bind": DATA_ROOT, "mode": "rw"}},
                healthcheck={
                    "test": ["CMD", *spec.health_command],
                    "interval": (5 if spec.is_publisher else 30) * _NS,
                    "timeout": 10 * _NS,
                    "retries": 3,
                    "start_period": 600 * _NS,
                },
                stop_signal="SIGTERM",
                **kwargs,
            )
            if start:
                container.start()
        except docker.errors.APIError as exc:
            raise DockerBackendError(
                f"{spec.name}: the engine refused the container: {exc}"
            ) from exc
        return container

    def _ensure_volume(self, name: str, service: str) -> None:
        import docker

        try:
            self.client.volumes.get(name)
        except docker.errors.NotFound:
            self.client.volumes.create(
                name=name, labels={LABEL_PROJECT: self.project, LABEL_VOLUME_OF: service}
            )

    def start(self, specs: Sequence[ServiceSpec]) -> dict[str, Any]:
        """Create and start every service (publisher first if present); name → container."""
        names = [s.name for s in specs]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ValueError(f"service names repeat: {sorted(duplicates)}")
        ports = [s.grpc_port for s in specs]
        if len(set(ports)) != len(ports):
            raise ValueError(
                "services share a gRPC port; on host networking every port must differ"
            )
        ordered = sorted(specs, key=lambda s: not s.is_publisher)
        return {spec.name: self.create(spec) for spec in ordered}

    def containers(self, *, all: bool = True) -> list[Any]:
        """This project's containers, sorted by name."""
        found = self.client.containers.list(
            all=all, filters={"label": f"{LABEL_PROJECT}={self.project}"}
        )
        return sorted(found, key=lambda c: c.name)

    def container(self, service: str) -> Any:
        import docker

        try:
            return self.client.containers.get(self.container_name(service))
        except docker.errors.NotFound as exc:
            raise DockerBackendError(
                f"no container {self.container_name(service)} in project {self.project}"
            ) from exc

    def status(self) -> dict[str, str]:
        """Service → `running`, `running (healthy)`, `exited (137)`, `paused`, ..."""
        out: dict[str, str] = {}
        for container in self.containers():
            container.reload()
            state = container.attrs["State"]
            text = state["Status"]
            if text == "exited":
                text += f" ({state.get('ExitCode')})"
            health = state.get("Health", {}).get("Status")
            if health and text == "running":
                text += f" ({health})"
            out[container.labels.get(LABEL_SERVICE, container.name)] = text
        return out

    def health(self, service: str) -> str | None:
        """Docker's health status of a service: starting, healthy, unhealthy (None: no check)."""
        container = self.container(service)
        container.reload()
        health = container.attrs["State"].get("Health")
        return None if health is None else str(health["Status"])

    def wait_healthy(self, service: str, *, timeout: float, poll: float = 1.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            status = self.health(service)
            if status == "healthy":
                return
            container = self.container(service)
            if container.status == "exited":
                raise DockerBackendError(
                    f"{service} exited with code {container.attrs['State']['ExitCode']} before "
                    f"turning healthy; last log lines:\n{self.tail(service, 20)}"
                )
            if time.monotonic() > deadline:
                raise DockerBackendError(f"{service} not healthy after {timeout:.0f} s ({status})")
            time.sleep(poll)

    def exec(self, service: str, command: Sequence[str]) -> tuple[int, str]:
        """Run a command inside a running service: (exit code, stdout+stderr)."""
        result = self.container(service).exec_run(list(command), demux=False)
        return int(result.exit_code), (result.output or b"").decode(errors="replace")

    # --- logs -------------------------------------------------------------------------------------
    def tail(self, service: str, lines: int = 50) -> str:
        raw = self.container(service).logs(tail=lines)
        return bytes(raw).decode(errors="replace")

    def follow_logs(self, service: str, *, since: float | None = None) -> Iterator[str]:
        """The service's log lines as they come (stdout and stderr), until the container stops."""
        kwargs: dict[str, Any] = {"stream": True, "follow": True}
        if since is not None:
            kwargs["since"] = since
        pending = b""
        for chunk in self.container(service).logs(**kwargs):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line.decode(errors="replace")
        if pending:
            yield pending.decode(errors="replace")

    # --- faults (CometBFT e2e style) --------------------------------------------------------------
    def kill(self, service: str, signal: str = "SIGKILL") -> None:
        """SIGKILL (default) or another signal; the container and its volume stay."""
        self.container(service).kill(signal=signal)

    def start_again(self, service: str) -> None:
        """Start a stopped or killed service: same container, same volume, same data directory."""
        self.container(service).start()

    def pause(self, service: str) -> None:
        self.container(service).pause()

    def unpause(self, service: str) -> None:
        self.container(service).unpause()

    def restart(self, service: str, *, timeout: int = 30) -> None:
        """SIGTERM, up to `timeout` seconds for a clean exit, then start again."""
        self.container(service).restart(timeout=timeout)

    def stop(self, service: str, *, timeout: int = 30) -> None:
        self.container(service).stop(timeout=timeout)

    # --- memory -----------------------------------------------------------------------------------
    def memory(self, service: str) -> MemoryUsage:
        container = self.container(service)
        return _memory_from_cgroup(container.id) or _memory_from_engine(container)

    def memory_all(self) -> dict[str, MemoryUsage]:
        """Memory of every running container: from the host's cgroup files when this machine runs
        the engine (microseconds each), else from the engine's stats (about a second each)."""
        return {
            c.labels.get(LABEL_SERVICE, c.name): _memory_from_cgroup(c.id) or _memory_from_engine(c)
            for c in self.containers(all=False)
        }

    # --- teardown ---------------------------------------------------------------------------------
    def down(self, *, volumes: bool = True, timeout: int = 10) -> list[str]:
        """Stop and remove every container of the project (and its volumes); the names removed."""
        import docker

        removed: list[str] = []
        for container in self.containers():
            try:
                if container.status == "paused":
                    container.unpause()
                if container.status in ("running", "paused", "restarting"):
                    container.stop(timeout=timeout)
                container.remove(force=True)
                removed.append(container.name)
            except docker.errors.NotFound:
                continue
        if volumes:
            for volume in self.client.volumes.list(
                filters={"label": f"{LABEL_PROJECT}={self.project}"}
            ):
                volume.remove(force=True)
                removed.append(f"volume {volume.name}")
        return removed


# Where a local engine keeps a container's memory cgroup: v1 (cgroupfs driver), v2 (cgroupfs and
# systemd drivers). {id} is the full container id.
_CGROUP_DIRS = (
    "/sys/fs/cgroup/memory/docker/{id}",
    "/sys/fs/cgroup/docker/{id}",
    "/sys/fs/cgroup/system.slice/docker-{id}.scope",
)


def _memory_from_cgroup(container_id: str) -> MemoryUsage | None:
    for pattern in _CGROUP_DIRS:
        directory = Path(pattern.format(id=container_id))
        try:
            if (directory / "memory.usage_in_bytes").exists():  # v1
                usage = int((directory / "memory.usage_in_bytes").read_text())
                inactive = _stat(directory / "memory.stat", "total_inactive_file")
            elif (directory / "memory.current").exists():  # v2
                usage = int((directory / "memory.current").read_text())
                inactive = _stat(directory / "memory.stat", "inactive_file")
            else:
                continue
            pids = [int(p) for p in (directory / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            continue
        return MemoryUsage(usage, max(0, usage - inactive), pss_of(pids))
    return None


def _stat(path: Path, key: str) -> int:
    for line in path.read_text().splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return 0


def _memory_from_engine(container: Any) -> MemoryUsage:
    stats = container.stats(stream=False, one_shot=True)
    mem = stats.get("memory_stats", {})
    usage = int(mem.get("usage", 0))
    detail = mem.get("stats", {})
    # cgroup v2 names it inactive_file, v1 total_inactive_file.
    inactive = int(detail.get("inactive_file", detail.get("total_inactive_file", 0)))
    try:
        top = container.top(ps_args="-o pid")
        pids = [int(row[0]) for row in top.get("Processes") or []]
    except Exception:  # a stopped container or a remote engine: no PSS
        pids = []
    return MemoryUsage(usage, max(0, usage - inactive), pss_of(pids) if pids else None)
