"""`dev`: from an empty state folder to a running system, restarted onto its data, nothing left behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import anthropic
import httpx
import psutil
import psycopg
import pytest

from poindexter_cloud.core.embedded import free_port

pytestmark = pytest.mark.slow


def start_dev(state_dir: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    ports = {name: free_port() for name in ("web", "proxy", "sandbox", "smtp")}
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "poindexter_cloud",
            "dev",
            "--state-dir",
            str(state_dir),
            "--web-port",
            str(ports["web"]),
            "--proxy-port",
            str(ports["proxy"]),
            "--sandbox-port",
            str(ports["sandbox"]),
            "--smtp-port",
            str(ports["smtp"]),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    urls: dict[str, str] = {}
    deadline = time.monotonic() + 60
    assert process.stdout is not None
    while "redis" not in urls:
        assert time.monotonic() < deadline, "dev did not print its URLs within a minute"
        line = process.stdout.readline()
        assert line or process.poll() is None, "dev exited before it was ready"
        match = re.match(r"^\s+(\w+)\s+(\S+://\S+)$", line)
        if match:
            urls[match.group(1)] = match.group(2)
    return process, urls


def stop_dev(process: subprocess.Popen[str], state_dir: Path) -> None:
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0
    leftovers = [
        p for p in psutil.process_iter(["cmdline"]) if str(state_dir) in " ".join(p.info["cmdline"] or [])
    ]
    assert leftovers == []


def a_newcomer_gets_an_answer_from_the_proxy(urls: dict[str, str]) -> str:
    """The README's path: sign up, make a key, get a plan (an operator's comp in dev), ask the proxy."""
    email = "newcomer@example.com"
    tokens = httpx.post(
        f"{urls['web']}/v1/auth/register", json={"email": email, "password": "a long passphrase"}, timeout=10
    ).json()
    key: str = httpx.post(
        f"{urls['web']}/v1/api-keys/",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
        timeout=10,
    ).json()["key"]
    env = {**os.environ, "DATABASE_URL": urls["postgres"], "REDIS_URL": urls["redis"]}
    comp = subprocess.run(
        [sys.executable, "-m", "poindexter_cloud", "admin", "billing", "comp", email],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert comp.returncode == 0, comp.stderr
    answer = anthropic.Anthropic(base_url=urls["proxy"], api_key=key, max_retries=0).messages.create(
        model="claude-sonnet-4-5", max_tokens=20, messages=[{"role": "user", "content": "hello dex"}]
    )
    assert answer.content[0].text.startswith("Sandbox reply to: hello dex")
    mail = httpx.get(f"{urls['mail']}", params={"to": email}, timeout=5).json()["messages"]
    assert mail and "verify-email" in mail[0]["text"]
    return key


def test_dev_starts_from_nothing_restarts_onto_its_data_and_leaves_nothing_behind(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    process, urls = start_dev(state_dir)
    try:
        for role in ("web", "proxy"):
            assert httpx.get(f"{urls[role]}/readyz", timeout=5).json()["status"] == "ok"
        assert httpx.get(f"{urls['sandbox']}/healthz", timeout=5).status_code == 200
        key = a_newcomer_gets_an_answer_from_the_proxy(urls)
        with psycopg.connect(urls["postgres"]) as connection:
            connection.execute("CREATE TABLE dev_marker (note text)")
            connection.execute("INSERT INTO dev_marker VALUES ('still here')")
    finally:
        stop_dev(process, state_dir)

    process, urls = start_dev(state_dir)
    try:
        with psycopg.connect(urls["postgres"]) as connection:
            assert connection.execute("SELECT note FROM dev_marker").fetchone() == ("still here",)
        assert httpx.get(f"{urls['web']}/readyz", timeout=5).status_code == 200
        answer = anthropic.Anthropic(base_url=urls["proxy"], api_key=key, max_retries=0).messages.create(
            model="claude-sonnet-4-5", max_tokens=20, messages=[{"role": "user", "content": "still there?"}]
        )
        assert answer.content[0].text.startswith("Sandbox reply")
    finally:
        stop_dev(process, state_dir)
