"""`qbfl-orchestrator compose`: the committed docker-compose.yml regenerates byte-identically, and its structure."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from qbfl.orchestrator.cli import main
from qbfl.orchestrator.compose import ComposeOptions, render_compose
from qbfl.orchestrator.roles import DEFAULT_MALICIOUS_SPEC, parse_malicious_spec, role_label
from qbfl.orchestrator.services import NetworkSettings, TaskSettings, plan_network

ROOT = Path(__file__).resolve().parents[3]
COMMITTED = ROOT / "docker-compose.yml"


def _documented_command(text: str) -> list[str]:
    lines = text.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("# Generated;"))
    command = lines[index + 1].removeprefix("#").strip()
    words = shlex.split(command)
    assert words[0] == "qbfl-orchestrator"
    return words[1:]


def _generate(args: list[str], tmp_path: Path) -> str:
    args = list(args)
    out = tmp_path / "compose.yml"
    args[args.index("--out") + 1] = str(out)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return out.read_text()


def test_committed_file_regenerates_byte_identically(tmp_path: Path) -> None:
    committed = COMMITTED.read_text()
    args = _documented_command(committed)
    assert args[args.index("--out") + 1] == "docker-compose.yml"
    fresh = _generate(args, tmp_path)
    # The header names the output file; the generated body must match byte for byte.
    assert fresh == committed.replace(
        "--out docker-compose.yml", f"--out {tmp_path / 'compose.yml'}"
    )


def test_committed_file_is_the_documented_default(tmp_path: Path) -> None:
    assert (
        _generate(["compose", "--out", "x"], tmp_path).replace(
            f"--out {tmp_path / 'compose.yml'}", "--out docker-compose.yml"
        )
        == COMMITTED.read_text()
    )


def _load(text: str) -> dict[str, Any]:
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def test_structure_of_the_default_file() -> None:
    data = _load(COMMITTED.read_text())
    services = data["services"]
    assert list(services) == ["publisher"] + [f"node-{i}" for i in range(50)]
    publisher = services["publisher"]
    image = publisher["image"]
    assert publisher["build"]["context"] == "."
    assert publisher["build"]["args"]["TORCH"] == "cpu"
    roles = NetworkSettings(malicious=parse_malicious_spec(DEFAULT_MALICIOUS_SPEC)).roles
    assert len(roles) == 14
    for name, service in services.items():
        assert service["init"] is True, name
        assert "network_mode" not in service, "default is the bridge network"
        assert service["healthcheck"]["test"][0] == "CMD"
        assert service["volumes"] == [f"{name}:/var/lib/qbfl"]
        if name == "publisher":
            continue
        node_id = int(name.removeprefix("node-"))
        # One image for all: nodes name the publisher's tag and never build.
        assert service["image"] == image and "build" not in service
        assert service["depends_on"] == {"publisher": {"condition": "service_healthy"}}
        command = service["command"]
        assert command[:4] == ["qbfl-node", "start", "--id", str(node_id)]
        malicious = tuple(command[i + 1] for i, w in enumerate(command) if w == "--malicious")
        assert malicious == roles.get(node_id, ())
        assert service["labels"]["qbfl.roles"] == role_label(malicious)
        assert command[command.index("--publisher") + 1] == "publisher:50050"
        assert command[command.index("--listen") + 1] == f"0.0.0.0:{51000 + node_id}"
        assert command[command.index("--advertise") + 1] == f"{name}:{51000 + node_id}"
        assert service["environment"]["QBFL_HEALTH_ADDRESS"] == f"127.0.0.1:{51000 + node_id}"
        assert "deploy" not in service
    assert set(data["volumes"]) == set(services)


def test_host_network_gpu_variant() -> None:
    settings = NetworkSettings(
        task=TaskSettings(nodes=5, rounds=6),
        malicious=parse_malicious_spec("1:labelflip"),
        network="host",
        base_port=47000,
        gpus=True,
    )
    data = _load(render_compose(settings, ComposeOptions(image="qbfl-ci:test", build=False)))
    services = data["services"]
    ports = set()
    for name, service in services.items():
        assert service["network_mode"] == "host"
        assert "build" not in service
        assert service["image"] == "${QBFL_IMAGE:-qbfl-ci:test}"
        address = service["labels"]["qbfl.address"]
        assert address.startswith("127.0.0.1:")
        ports.add(address)
        if name != "publisher":
            command = service["command"]
            assert command[command.index("--publisher") + 1] == "127.0.0.1:47000"
            devices = service["deploy"]["resources"]["reservations"]["devices"]
            assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert ports == {f"127.0.0.1:{p}" for p in range(47000, 47006)}
    script = services["publisher"]["command"][2]
    assert "--listen 127.0.0.1:47000" in script
    assert services["publisher"]["environment"]["QBFL_ROUNDS"] == "${QBFL_ROUNDS:-6}"


def test_publisher_script_runs_init_then_serve(tmp_path: Path) -> None:
    """The publisher's shell line expands its knobs as intended (a fake qbfl-publisher records argv)."""
    import os
    import subprocess

    settings = NetworkSettings(task=TaskSettings(nodes=4, committee=3, seed=2))
    spec = plan_network(settings)[0]
    fake = tmp_path / "qbfl-publisher"
    fake.write_text('#!/bin/sh\necho "$@" >> "$LOG"\n')
    fake.chmod(0o755)
    log = tmp_path / "log"
    env = dict(spec.environment, PATH=f"{tmp_path}:{os.environ['PATH']}", LOG=str(log))
    env["QBFL_INIT_ARGS"] = "--qba paper"
    subprocess.run(list(spec.command), env=env, check=True)
    init, serve = log.read_text().splitlines()
    assert init == (
        "init --task mnist --nodes 4 --seed 2 --committee 3 --qba paper --out /var/lib/qbfl/publisher"
    )
    assert serve == "serve --dir /var/lib/qbfl/publisher --listen 0.0.0.0:50050"
    log.unlink()
    env["QBFL_ROUNDS"] = "7"
    subprocess.run(list(spec.command), env=env, check=True)
    assert log.read_text().splitlines()[0].startswith("init --task mnist --rounds 7 --nodes 4")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nodes", "5", "--malicious", "6:labelflip"], "only 5"),
        (["--malicious", "3:nope"], "unknown role"),
        (["--network", "host", "--base-port", "65500"], "base port"),
    ],
)
def test_bad_flags_are_usage_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["compose", "--out", "-", *args])
    assert result.exit_code == 2
    assert message in result.output


def test_stdout_output_is_deterministic() -> None:
    runner = CliRunner()
    first = runner.invoke(
        main, ["compose", "--nodes", "7", "--malicious", "2:bitflip", "--out", "-"]
    )
    second = runner.invoke(
        main, ["compose", "--nodes", "7", "--malicious", "2:bitflip", "--out", "-"]
    )
    assert first.exit_code == 0 and first.output == second.output
    assert len(_load(first.output)["services"]) == 8
