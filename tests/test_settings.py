"""Settings: every bad variable named at once, secrets never shown."""

from __future__ import annotations

import os
import subprocess
import sys

from poindexter_cloud.core.settings import Role, load


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY"}}
    return subprocess.run(
        [sys.executable, "-m", "poindexter_cloud", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_role_refuses_to_start_naming_every_bad_variable() -> None:
    result = run_cli(
        "serve",
        "--role",
        "web",
        env={"REDIS_URL": "http://nope", "DB_POOL_SIZE": "zero", "ENVIRONMENT": "production"},
    )
    assert result.returncode == 2
    for name in ("DATABASE_URL", "REDIS_URL", "DB_POOL_SIZE", "SECRET_KEY"):
        assert name in result.stderr
    assert "Traceback" not in result.stderr


def test_config_check_lists_sources_and_masks_secrets() -> None:
    password = "hunter2-very-secret"
    result = run_cli(
        "config",
        "check",
        "--role",
        "proxy",
        env={
            "DATABASE_URL": f"postgresql://app:{password}@db.internal:5432/pdx",
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            "SECRET_KEY": "ab" * 32,
        },
    )
    assert result.returncode == 0, result.stdout
    assert password not in result.stdout
    assert "ab" * 32 not in result.stdout
    lines = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines() if line.strip()}
    assert lines["DATABASE_URL"] == "env"
    assert lines["LOG_LEVEL"] == "default"
    assert "configuration is valid for role proxy" in result.stdout


def test_production_refuses_the_development_secret() -> None:
    loaded = load(
        {"ENVIRONMENT": "production", "DATABASE_URL": "postgresql://h/db", "REDIS_URL": "redis://h:6379"},
        Role.WEB,
    )
    assert [problem.env for problem in loaded.problems] == [
        "SECRET_KEY",
        "STRIPE_SECRET_KEY",
        "STRIPE_WEBHOOK_SECRET",
        "GOOGLE_WORKSPACE_DOMAIN",
        "GOOGLE_SERVICE_ACCOUNT_JSON",
        "TELNYX_API_KEY",
        "TELNYX_PUBLIC_KEY",
        "SIGNAL_API_URL",
    ]
    assert load({"DATABASE_URL": "postgresql://h/db", "REDIS_URL": "redis://h:6379"}, Role.WEB).problems == ()


def test_the_readme_documents_every_setting() -> None:
    from pathlib import Path

    from poindexter_cloud.core.settings import SPECS

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert [spec.env for spec in SPECS if f"`{spec.env}`" not in readme] == []


def test_the_proxy_refuses_an_upstream_it_could_not_call() -> None:
    upstream = (
        '[{"name": "anthropic", "kind": "anthropic", "base_url": "ftp://api.anthropic.com",'
        ' "api_keys": ["sk-ant-secret-upstream-key"], "models": ["claude-sonnet-4-5"]}]'
    )
    result = run_cli("serve", "--role", "proxy", env={"PROXY_UPSTREAMS": upstream})
    assert result.returncode == 2
    assert "PROXY_UPSTREAMS" in result.stderr and "not an http(s) URL" in result.stderr
    assert "sk-ant-secret-upstream-key" not in result.stderr
