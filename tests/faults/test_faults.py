"""Faults under load: nothing lost, nothing doubled, and the replay matches the live models.

The four services run as processes (two replicas each) against a server of this test's own,
since the test kills it: every service is SIGKILLed at least twice at random (seeded)
moments while a mixed load is published, and the server once; see tools/faults/.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from shared.adapters.lifecycle import alive_key
from shared.adapters.server import EmbeddedServer
from tools.faults.config import FaultConfig
from tools.faults.harness import run_faults
from tools.supervisor import SERVICES, Stack, service_command

pytestmark = pytest.mark.faults

CONFIG = FaultConfig(
    events=4000,
    members=12,
    rate=160,
    faults=2 * len(SERVICES),
    server_restarts=1,
    replicas=2,
    seed=20,
    drain_timeout=120,
)


def use_server(monkeypatch: pytest.MonkeyPatch, server: EmbeddedServer) -> None:
    monkeypatch.setenv("REDIS_URL", server.url)
    monkeypatch.delenv("PZ_ACL", raising=False)
    for name, value in CONFIG.env().items():
        monkeypatch.setenv(name, value)


@pytest.mark.timeout(240)
async def test_kill_9_of_services_and_server_loses_and_doubles_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = EmbeddedServer(tmp_path / "valkey", appendfsync="always").start()
    use_server(monkeypatch, server)
    try:
        report = await run_faults(CONFIG, server, tmp_path, say=print)
    finally:
        server.stop()
    summary = report.summary()
    print(json.dumps(summary))
    kills = Counter(service for _, service, _ in report.faults.kills)
    assert all(kills[service] >= 2 for service in SERVICES), kills
    assert summary["server_restarts"] == 1
    assert not report.not_drained, report.not_drained
    assert summary["lost"] == 0, report.findings.lost[:10] + report.findings.not_dead_lettered[:10]
    assert summary["doubled"] == 0, report.findings.doubled[:10]
    assert summary["diffs"] == 0 and summary["verify_skipped"] == 0, report.diffs[:10]
    assert summary["verify_compared"] > 0
    assert summary["rejected"] > 0 and not report.findings.not_dead_lettered
    assert not report.findings.wrongly_rejected, report.findings.wrongly_rejected[:10]
    assert not report.findings.unexpected, report.findings.unexpected[:10]
    assert not report.findings.reordered, report.findings.reordered[:10]
    assert not report.findings.model_mismatches, report.findings.model_mismatches[:10]
    assert not report.rpc_failures, report.rpc_failures[:5]
    assert summary["acl"] and report.faults.pauses, "ACL users on; a lease holder paused"
    assert report.ledger.labels["poison_embedding"] > 0
    assert summary["restore_exported"] == summary["log_events"]
    assert summary["restore_new_events"] == 0, "the restored system appended events by itself"
    assert summary["restore_differences"] == 0, report.restore.differences[:5]


@pytest.mark.timeout(90)
def test_a_service_started_during_a_server_outage_comes_up_when_the_server_is_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = EmbeddedServer(tmp_path / "valkey", appendfsync="always")
    use_server(monkeypatch, server)
    stack = Stack(tmp_path, quiet=True)
    logs = tmp_path / "logs"
    logs.mkdir()
    for service in SERVICES:
        with open(logs / f"{service}-0.log", "ab") as log:
            stack.processes[(service, 0)] = subprocess.Popen(
                service_command(service), env=stack.env(service, 0), stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
    try:
        time.sleep(6)
        server.start()
        deadline = time.monotonic() + 30
        with redis.Redis.from_url(server.url) as client:
            while time.monotonic() < deadline:
                up = {s for s in SERVICES if client.exists(alive_key(s, f"{s}-0"))}
                gone = {s for (s, _), p in stack.processes.items() if p.poll() is not None}
                if up | gone == set(SERVICES):
                    break
                time.sleep(0.2)
        exited = sorted(s for (s, _), p in stack.processes.items() if p.poll() is not None)
        assert not exited, f"exited instead of waiting for the server: {exited}"
        assert up == set(SERVICES)
    finally:
        stack.stop()
        server.stop()
