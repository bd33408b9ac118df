"""The deployment files (Dockerfile, compose.yaml, fly.toml) agree with each other, the CLI and the README."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ROLE_PORTS = {"web": 8000, "proxy": 8001, "worker": 8003}
ROLES = tuple(ROLE_PORTS)


def expected_command(role: str) -> list[str]:
    return ["serve", "--role", role, "--host", "0.0.0.0", "--port", str(ROLE_PORTS[role])]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def fly() -> dict[str, Any]:
    return tomllib.loads((ROOT / "fly.toml").read_text(encoding="utf-8"))


def compose_command(compose: dict[str, Any], service: str) -> list[str]:
    command = compose["services"][service]["command"]
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def fly_command(fly: dict[str, Any], process: str) -> list[str]:
    return shlex.split(fly["processes"][process])


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    logical: list[str] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    if current:
        logical.append(current)
    pairs = []
    for entry in logical:
        keyword, _, args = entry.partition(" ")
        pairs.append((keyword.upper(), args.strip()))
    return pairs


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    assert starts, "Dockerfile has no FROM"
    return instructions[starts[-1] :]


@pytest.mark.parametrize("role", ROLES)
def test_compose_role_command(compose: dict[str, Any], role: str) -> None:
    assert role in compose["services"], f"compose.yaml has no {role} service"
    assert compose_command(compose, role) == expected_command(role)


@pytest.mark.parametrize("role", ROLES)
def test_fly_role_command(fly: dict[str, Any], role: str) -> None:
    assert role in fly.get("processes", {}), f"fly.toml has no {role} process"
    assert fly_command(fly, role) == expected_command(role)


@pytest.mark.parametrize("role", ROLES)
def test_role_command_is_in_readme(compose: dict[str, Any], fly: dict[str, Any], role: str) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for command in (compose_command(compose, role), fly_command(fly, role)):
        line = " ".join(["poindexter-cloud", *command])
        assert line in readme, f"README.md does not show {line!r}"


@pytest.mark.parametrize("role", ROLES)
def test_role_command_parses_with_the_cli(compose: dict[str, Any], fly: dict[str, Any], role: str) -> None:
    from poindexter_cloud.cli import build_parser

    for command in (compose_command(compose, role), fly_command(fly, role)):
        try:
            build_parser().parse_args(command)
        except SystemExit as exc:  # argparse exits on a bad command line
            pytest.fail(f"the CLI rejects {command!r} (exit {exc.code})")


def test_migrate_command(compose: dict[str, Any], fly: dict[str, Any]) -> None:
    assert "migrate" in compose["services"]
    assert compose_command(compose, "migrate") == ["migrate", "upgrade"]
    assert shlex.split(fly["deploy"]["release_command"]) == ["migrate", "upgrade"]

    from poindexter_cloud.cli import build_parser

    build_parser().parse_args(["migrate", "upgrade"])


def test_compose_app_services_wait_for_migrations(compose: dict[str, Any]) -> None:
    for role in ROLES:
        depends_on = compose["services"][role].get("depends_on", {})
        assert depends_on.get("migrate", {}).get("condition") == "service_completed_successfully", role
        for dependency in ("postgres", "redis"):
            assert depends_on.get(dependency, {}).get("condition") == "service_healthy", (role, dependency)


@pytest.mark.parametrize("role", ROLES)
def test_compose_healthcheck_uses_healthz(compose: dict[str, Any], role: str) -> None:
    healthcheck = compose["services"][role].get("healthcheck")
    assert healthcheck, f"compose service {role} has no healthcheck"
    test = healthcheck["test"]
    text = test if isinstance(test, str) else " ".join(str(part) for part in test)
    assert f":{ROLE_PORTS[role]}/healthz" in text


def test_fly_services_have_healthz_checks(fly: dict[str, Any]) -> None:
    services = as_list(fly.get("services")) + as_list(fly.get("http_service"))
    assert services, "fly.toml defines no service"
    groups_with_a_service: set[str] = set()
    for service in services:
        processes = service.get("processes") or ["app"]
        groups_with_a_service.update(processes)
        checks = as_list(service.get("http_checks")) + as_list(service.get("checks"))
        paths = {check.get("path") for check in checks}
        assert "/healthz" in paths, f"fly service for {processes} has no /healthz check"
        for process in processes:
            assert process in fly["processes"], f"fly service names unknown process group {process!r}"
    assert {"web", "proxy"} <= groups_with_a_service
    by_group = {
        process: service["internal_port"]
        for service in services
        for process in service.get("processes") or ["app"]
    }
    assert by_group["web"] == ROLE_PORTS["web"]
    assert by_group["proxy"] == ROLE_PORTS["proxy"]


def test_fly_worker_has_a_healthz_check(fly: dict[str, Any]) -> None:
    checks = fly.get("checks", {}).values()
    assert any(
        "worker" in check.get("processes", []) and check.get("path") == "/healthz" for check in checks
    ), "fly.toml has no /healthz check for the worker"


def test_fly_has_vm_and_metrics(fly: dict[str, Any]) -> None:
    assert as_list(fly.get("vm")), "fly.toml has no [[vm]]"
    metrics = as_list(fly.get("metrics"))
    assert metrics and all(entry.get("path") == "/metrics" for entry in metrics)


def test_dockerfile_entrypoint_and_user() -> None:
    stage = final_stage(dockerfile_instructions())
    entrypoints = [args for keyword, args in stage if keyword == "ENTRYPOINT"]
    assert entrypoints, "the final stage has no ENTRYPOINT"
    assert entrypoints[-1].replace(" ", "") == '["poindexter-cloud"]'
    users = [args for keyword, args in stage if keyword == "USER"]
    assert users, "the final stage runs as root (no USER)"
    user = re.split(r"[:\s]", users[-1])[0]
    assert user not in {"root", "0"}
    assert any(keyword == "HEALTHCHECK" and "/healthz" in args for keyword, args in stage)
