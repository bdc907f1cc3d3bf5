"""The system under ACL users, as processes (issue 8, findings 1, 2, 3, 8 and 11).

- ``make run``'s embedded server has no open default user; admin and publisher passwords are
  made once and kept in ``data/credentials.json`` (0600); users survive a server restart,
  and the supervisor restarts a server that was killed.
- A service refused by the server (wrong password, user gone) exits with a clear message
  instead of retrying forever.
- Every service works without one denied command; outside callers get a publisher user,
  which cannot make any service write outside the reply lists.
- Grids are served by their own process (selection-grid), not by ingest.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from services.selection_ingest.app import build as build_ingest
from services.selection_ingest.grid_app import build as build_grid
from shared.acl import acl_rules, url_for, user_name
from shared.adapters.catalog import registered
from shared.adapters.lifecycle import EXIT_FATAL, alive_key
from shared.adapters.server import free_port
from shared.client import Client, inbound
from shared.deadletter import DeadLetter
from shared.domain.rpc import RPC_DEAD_LETTERS
from shared.keys import GRID_RPC, PROFILES_RPC, RESOLVE_RPC, partition_for
from shared.settings import Settings
from tests.helpers import catalog, eventually
from tools.supervisor import Stack, service_command

pytestmark = pytest.mark.e2e
ENV = {"PZ_PARTITIONS": "2", "PZ_EMBED_DIM": "16", "PZ_UNLOCK_V7": "6", "PZ_MINT_EVERY": "6"}
ROOT = Path(__file__).resolve().parents[2]


def use(monkeypatch: pytest.MonkeyPatch, redis_url: str | None) -> None:
    if redis_url is None:
        monkeypatch.delenv("REDIS_URL", raising=False)
        monkeypatch.setenv("PZ_PORT", str(free_port()))
    else:
        monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.delenv("PZ_ACL", raising=False)
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module")
def acl_stack(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """All services as processes, each as its own ACL user, on the suite's server."""
    with pytest.MonkeyPatch.context() as patch:
        use(patch, server_url)
        redis.Redis.from_url(server_url).flushdb()
        running = Stack(Path(tmp_path_factory.mktemp("acl")), quiet=True, acl=True)
        running.start(timeout=60)
        try:
            yield running
        finally:
            running.stop()


async def publish_catalog(client: Client, admin_url: str, n: int = 40) -> list[str]:
    """Register ``n`` images as a publisher, and wait (as admin) until grids may show them."""
    messages = catalog(n, 16)
    await client.publish_many(messages)
    ids = [m["payload"]["image_id"] for m in messages]
    admin = redis.asyncio.Redis.from_url(admin_url)
    await eventually(lambda: registered(admin, ids), all)
    await admin.aclose()
    return ids


async def pick_from_grids(client: Client, member: str, grids: int) -> None:
    for _ in range(grids):
        grid = await client.grid(member)
        assert grid.ok, grid.error
        await client.publish_many(
            inbound("ImagePicked", member, {"grid_id": grid.grid_id, "image_id": image})
            for image in grid.image_ids[:3]
        )


def rpc_letters(admin: redis.Redis) -> list[DeadLetter]:
    entries: Any = admin.xrange(RPC_DEAD_LETTERS)
    return [DeadLetter.model_validate_json(fields[b"dead"]) for _, fields in entries]


async def test_a_publisher_cannot_make_a_service_expire_the_log(acl_stack: Stack) -> None:
    admin = redis.Redis.from_url(acl_stack.url)
    async with Client(acl_stack.publisher_url, 2) as client:
        await publish_catalog(client, acl_stack.url)
        log = partition_for("artist", 2).log
        length = admin.xlen(log)
        before = len(rpc_letters(admin))
        attack = {"member_id": "alice", "prompt": "x --p", "reply_to": log}
        for rpc in (GRID_RPC, RESOLVE_RPC, PROFILES_RPC):
            await client.redis.rpush(rpc, json.dumps(attack))
        found = await eventually(lambda: _async(rpc_letters(admin)), lambda f: len(f) == before + 3)
        assert {(f.code, f.source) for f in found[before:]} == {
            ("INVALID_REPLY_TO", rpc) for rpc in (GRID_RPC, RESOLVE_RPC, PROFILES_RPC)
        }
        assert admin.ttl(log) == -1 and admin.type(log) == b"stream" and admin.xlen(log) == length
        example = {
            "member_id": "alice",
            "prompt": "a lighthouse --p",
            "reply_to": "pz:reply:42abcdef",
        }
        await client.redis.rpush(RESOLVE_RPC, json.dumps(example))
        reply: Any = await client.redis.blpop(["pz:reply:42abcdef"], timeout=5)
        assert reply is not None and json.loads(reply[1])["error"]["code"] == "PROFILE_LOCKED"
    admin.close()


async def _async(value: Any) -> Any:
    return value


def answers(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_timeout=1) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


async def test_every_service_does_its_work_without_one_denied_command(acl_stack: Stack) -> None:
    admin = redis.Redis.from_url(acl_stack.url)
    admin.execute_command("ACL", "LOG", "RESET")
    async with Client(acl_stack.publisher_url, 2) as client:
        await publish_catalog(client, acl_stack.url)
        await pick_from_grids(client, "erin", 2)
        listing = await eventually(lambda: client.profiles("erin"), lambda found: found.codes)
        reply = await client.resolve("erin", "a harbour --p --s 300")
        assert reply.ok and reply.entries[0].code == listing.codes[0].code
        assert await client.resolve_plain("erin", "a harbour --p --s 300") == reply
    time.sleep(2 * 2.0)  # a heartbeat or two, and the followers' lease renewals
    denials = [
        {k: v for k, v in entry.items() if k in (b"username", b"object", b"reason")}
        for entry in admin.execute_command("ACL", "LOG", 100)
    ]
    assert denials == [], denials
    assert all(process.poll() is None for process in acl_stack.processes.values())
    admin.close()


async def test_grids_come_from_their_own_process_not_from_ingest(
    acl_stack: Stack, settings: Settings
) -> None:
    assert build_ingest(settings).broker.subscribers == [], "ingest serves no RPC"
    [grid] = build_grid(settings).broker.subscribers
    assert grid.list_sub.name == GRID_RPC  # type: ignore[attr-defined]
    process = acl_stack.processes[("selection-grid", 0)]
    process.send_signal(signal.SIGKILL)
    process.wait()
    async with Client(acl_stack.publisher_url, 2) as client:
        await publish_catalog(client, acl_stack.url)
        with pytest.raises(TimeoutError):
            await client.grid("fred", timeout=1.5)
        acl_stack.spawn("selection-grid", 0)
        acl_stack.wait_alive(timeout=30)
        served = await client.grid("fred", timeout=10)
        assert served.ok and len(served.image_ids) == 9
    redis.Redis.from_url(acl_stack.url).delete(GRID_RPC)  # the request that timed out


def service_output(process: subprocess.Popen[str], timeout: float) -> tuple[int, str]:
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
        return -1, out
    return process.returncode, out


def run_service(service: str, url: str, replica: str) -> subprocess.Popen[str]:
    env = {**os.environ, **ENV, "REDIS_URL": url, "PZ_REPLICA": replica, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        service_command(service), cwd=ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


@pytest.mark.parametrize("service", ["prompt-resolver", "code-minter"])
def test_a_service_given_a_wrong_password_exits_with_a_clear_message(
    redis_url: str, service: str
) -> None:
    started = time.monotonic()
    process = run_service(service, url_for(redis_url, service, "not-its-password"), "w-0")
    code, out = service_output(process, timeout=20)
    assert code == EXIT_FATAL, out[-2000:]
    assert time.monotonic() - started < 20
    [line] = [line for line in out.splitlines() if "exiting" in line]
    assert service in line and "refused this service's user" in line, line
    assert "WRONGPASS" in line or "invalid username-password" in line, line


def test_a_service_whose_user_vanishes_exits_instead_of_retrying(redis_url: str) -> None:
    admin = redis.Redis.from_url(redis_url)
    service, user = "selection-ingest", user_name("selection-ingest")
    admin.execute_command("ACL", "SETUSER", user, *acl_rules(service, "pw-vanish"))
    process = run_service(service, url_for(redis_url, service, "pw-vanish"), "v-0")
    try:
        deadline = time.monotonic() + 30
        while not admin.exists(alive_key(service, "v-0")):
            assert process.poll() is None and time.monotonic() < deadline, "never came up"
            time.sleep(0.1)
        admin.execute_command("ACL", "DELUSER", user)  # as a restart without ACL SAVE did
        code, out = service_output(process, timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
        admin.close()
    assert code == EXIT_FATAL, out[-2000:]
    assert "refused this service's user" in out


@pytest.fixture
def embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    """``make run`` as it runs on a laptop: its own embedded server, ACL users on."""
    use(monkeypatch, None)
    running = Stack(tmp_path, quiet=True)
    try:
        running.start(timeout=60)
        yield running
    finally:
        running.stop()


async def test_make_run_closes_the_default_user_and_survives_a_killed_server(
    embedded: Stack, tmp_path: Path
) -> None:
    assert embedded.server is not None and embedded.acl
    port = embedded.server.port
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=port).ping()  # the default user is off
    credentials = tmp_path / "credentials.json"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    passwords = json.loads(credentials.read_text())
    assert embedded.url == url_for(embedded.server_url, "admin", passwords["admin"])
    assert embedded.publisher_url == url_for(
        embedded.server_url, "publisher", passwords["publisher"]
    )
    assert embedded.describe(2)["redis_url"] == embedded.url

    async with Client(embedded.publisher_url, 2) as client:
        await publish_catalog(client, embedded.url)
        await pick_from_grids(client, "gina", 1)
        await eventually(
            lambda: client.profiles("gina"), lambda f: f.profiles and f.profiles[0].picks == 3
        )
    services = dict(embedded.processes)
    stop = threading.Event()
    watcher = threading.Thread(target=embedded.watch, args=(stop,), daemon=True)
    watcher.start()
    try:
        server, killed = embedded.server, embedded.server.process
        assert killed is not None
        killed.send_signal(signal.SIGKILL)
        restarted = await eventually(
            lambda: _async(server.process is not killed and answers(embedded.url)), bool, timeout=30
        )
        assert restarted and server.port == port
        async with Client(embedded.publisher_url, 2) as client:
            await pick_from_grids(client, "gina", 1)
            found = await eventually(
                lambda: client.profiles("gina"),
                lambda f: f.profiles and f.profiles[0].picks == 6,
                timeout=30,
            )
        assert found.profiles[0].unlocked
    finally:
        stop.set()
        watcher.join()
    exited = [key for key, process in services.items() if process.poll() is not None]
    assert not exited, f"refused after the restart (their users were lost): {exited}"
    assert embedded.processes == services, "no service needed restarting"
    embedded.stop()

    again = Stack(tmp_path, quiet=True)
    again.start(timeout=60)
    try:
        assert again.credentials is not None and not again.credentials.created
        assert json.loads(credentials.read_text()) == passwords, "made once, re-used"
        async with Client(again.publisher_url, 2) as client:
            assert (await client.profiles("gina")).profiles[0].picks == 6
    finally:
        again.stop()


def test_the_running_systems_url_reaches_ops_tools(redis_url: str, tmp_path: Path) -> None:
    """``make dead-letters`` and friends act on data/run.json's server, not on port 6379."""
    run = tmp_path / "run.json"
    run.write_text(json.dumps({"redis_url": redis_url, "partitions": 2}))
    admin = redis.Redis.from_url(redis_url)
    letter = DeadLetter.of(b"{}", service="selection-ingest", source="pz:{p1}:inbox",
                           entry_id="1-1", code="UNKNOWN_IMAGE", reason="for the test", at=np.datetime64("2026-01-01").item())  # fmt: skip
    admin.xadd("pz:{p1}:dead", {"dead": letter.to_bytes()})
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PZ_PARTITIONS")}
    env["PZ_RUN_FILE"] = str(run)
    result = subprocess.run(
        [sys.executable, "-m", "tools.redrive", "list"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "for the test" in result.stdout and "1 dead letters" in result.stdout
    admin.close()
