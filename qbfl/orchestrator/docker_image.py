"""Building the project image through the Docker engine's API (`qbfl-orchestrator up --backend docker`).

The Dockerfile's base image is a build argument; local wheels are served on loopback for the
duration of a host-network build (so they never enter a layer, and a stable port keeps the layer
cache), and extra CA files are added to the build context's `extra-ca/` without touching the
working tree.
"""

from __future__ import annotations

import functools
import http.server
import os
import tarfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qbfl.errors import QbflError


class DockerBackendError(QbflError):
    """The Docker engine refused or failed an operation; the message says which and what to check."""


@dataclass(frozen=True)
class ImageBuild:
    """How to build the project image (Dockerfile build arguments and the context around them)."""

    tag: str
    context: Path = Path(".")
    base_image: str | None = None  # None: the Dockerfile's default (python:3.11-slim-bookworm)
    torch: str = "cpu"  # cpu | cuda
    torch_index_url: str | None = None  # None: the Dockerfile's default; "" to use only the index
    wheel_dir: Path | None = None  # local wheels served on 127.0.0.1 while building
    extra_ca: Sequence[Path] = ()  # *.crt files trusted by the build's download stages
    network_mode: str = "host"

    def __post_init__(self) -> None:
        if self.torch not in ("cpu", "cuda"):
            raise ValueError(f"torch must be cpu or cuda, got {self.torch!r}")
        for ca in self.extra_ca:
            if ca.suffix != ".crt":
                raise ValueError(f"{ca}: extra CA files must be named *.crt")


def host_extra_cas(directory: Path = Path("/usr/local/share/ca-certificates")) -> tuple[Path, ...]:
    """The host's locally added CA certificates (a TLS-inspecting proxy's CA lives there)."""
    return tuple(sorted(directory.glob("*.crt"))) if directory.is_dir() else ()


# The wheel URL is a build argument: a stable port keeps the layer cache valid between builds.
WHEEL_PORT = 39847


@contextmanager
def serve_directory_on_loopback(directory: Path, *, port: int = WHEEL_PORT) -> Iterator[str]:
    """Serve `directory` over HTTP on 127.0.0.1:`port` (any free port if taken) while the block runs."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="qbfl-wheel-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _dockerignore(context: Path) -> list[str]:
    path = context / ".dockerignore"
    if not path.is_file():
        return []
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def build_context_tar(context: Path, extra_ca: Sequence[Path] = ()) -> Any:
    """The build context as an uncompressed tar file object (.dockerignore applied, CAs added)."""
    from docker.utils import build as docker_build

    archive = docker_build.tar(str(context), exclude=_dockerignore(context))
    if extra_ca:
        with tarfile.open(fileobj=archive, mode="a") as tar:
            for ca in extra_ca:
                tar.add(str(ca), arcname=f"extra-ca/{ca.name}")
        archive.seek(0)
    return archive


def build_image(
    client: Any, build: ImageBuild, *, on_log: Callable[[str], None] | None = None
) -> str:
    """Build the Dockerfile in `build.context` as `build.tag`; returns the image id."""
    import docker

    args: dict[str, str] = {"TORCH": build.torch}
    if build.base_image is not None:
        args["BASE_IMAGE"] = build.base_image
    if build.torch_index_url is not None:
        args["TORCH_INDEX_URL"] = build.torch_index_url
    if build.wheel_dir is not None and build.network_mode != "host":
        raise ValueError("local wheels are served on loopback: build with network_mode='host'")

    @contextmanager
    def wheels() -> Iterator[None]:
        if build.wheel_dir is None:
            yield
            return
        with serve_directory_on_loopback(build.wheel_dir) as url:
            args["WHEELS_URL"] = url
            yield

    log = on_log or (lambda line: None)
    image_id: str | None = None
    with wheels():
        context = build_context_tar(build.context, build.extra_ca)
        try:
            stream = client.api.build(
                fileobj=context,
                custom_context=True,
                tag=build.tag,
                buildargs=args,
                network_mode=build.network_mode,
                rm=True,
                forcerm=True,
                decode=True,
            )
            for item in stream:
                if "stream" in item:
                    for line in str(item["stream"]).splitlines():
                        if line.strip():
                            log(line)
                if "error" in item:
                    raise DockerBackendError(f"building {build.tag} failed: {item['error']}")
                aux = item.get("aux")
                if isinstance(aux, Mapping) and "ID" in aux:
                    image_id = str(aux["ID"])
        except docker.errors.APIError as exc:
            raise DockerBackendError(f"building {build.tag} failed: {exc}") from exc
        finally:
            context.close()
    return image_id or str(client.images.get(build.tag).id)


def default_wheel_dir() -> Path | None:
    """A local wheel folder worth serving to the build ($QBFL_WHEEL_DIR, else /opt/wheels)."""
    candidate = Path(os.environ.get("QBFL_WHEEL_DIR", "/opt/wheels"))
    return candidate if candidate.is_dir() and any(candidate.glob("*.whl")) else None
