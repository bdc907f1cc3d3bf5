"""One fault run, wired from its parts: start the services, publish the simulated load while
the injector kills processes and the server, drain, check, rebuild and compare, restore."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from shared.adapters.server import EmbeddedServer
from tools.supervisor import SERVICES, Stack

from .checks import (
    Findings,
    check,
    drain,
    rebuild_and_verify,
    rpc_answers,
    service_log_findings,
    unexpected_exits,
)
from .config import FaultConfig, Say, stderr
from .injection import FaultInjector, FaultLog, all_alive
from .restore import RestoreReport, restore_cycle
from .simulation import (
    Ledger,
    LoadGenerator,
    MemberSim,
    ProfileIds,
    Publisher,
    make_catalog,
    member_ids,
    register_catalog,
)


@dataclass
class FaultReport:
    config: FaultConfig
    ledger: Ledger
    findings: Findings
    faults: FaultLog
    diffs: list[str]
    compared: int
    skipped: int
    seconds: float
    publish_s: float
    drain_s: float
    rebuild_s: float
    not_drained: list[str]
    rpc_failures: list[str]
    exits: list[str]
    no_heartbeat: list[str]
    service_logs: dict[str, int]
    restore: RestoreReport = field(default_factory=RestoreReport)

    @property
    def lost(self) -> int:
        return len(self.findings.lost) + len(self.findings.not_dead_lettered)

    @property
    def doubled(self) -> int:
        return len(self.findings.doubled)

    @property
    def ok(self) -> bool:
        f = self.findings
        problems = (f.lost, f.not_dead_lettered, f.doubled, f.wrongly_rejected, f.unexpected,
                    f.reordered, f.model_mismatches, self.diffs, self.rpc_failures, self.exits,
                    self.no_heartbeat, self.not_drained)  # fmt: skip
        restored = self.restore.ok or not self.config.restore
        return not any(problems) and self.skipped == 0 and restored

    def summary(self) -> dict[str, Any]:
        f = self.findings
        return {
            "events_sent": self.ledger.sent,
            "accepted": len(self.ledger.accepted),
            "rejected": len(self.ledger.rejected),
            "resent": self.ledger.resends,
            "faults_injected": len(self.faults.kills),
            "server_restarts": len(self.faults.server_restarts),
            "lease_holder_pauses": len(self.faults.pauses),
            "acl": self.config.acl,
            "replicas": self.config.replicas,
            "diffs": len(self.diffs),
            "lost": self.lost,
            "doubled": self.doubled,
            "wrongly_rejected": len(f.wrongly_rejected),
            "unexpected": len(f.unexpected),
            "reordered": len(f.reordered),
            "model_mismatches": len(f.model_mismatches),
            "verify_compared": self.compared,
            "verify_skipped": self.skipped,
            "log_events": f.log_events,
            "ingest_stats": dict(sorted(f.ingest_stats.items())),
            "dead_letter_codes": dict(sorted(f.dead_letter_codes.items())),
            "dead_letters": f.dead_letters,
            "codes": f.codes,
            "retried_xadds": self.ledger.retries,
            "rpc_failures": len(self.rpc_failures),
            "unexpected_exits": len(self.exits),
            "drained": not self.not_drained,
            "seconds": round(self.seconds, 1),
            "publish_s": round(self.publish_s, 1),
            "drain_s": round(self.drain_s, 1),
            "rebuild_s": round(self.rebuild_s, 1),
            "events_per_s": round(self.ledger.sent / max(self.publish_s + self.drain_s, 1e-9), 1),
            "seed": self.config.seed,
            "mix": dict(self.ledger.labels.most_common()),
            **self.restore.summary(),
            "ok": self.ok,
        }

    def problems(self) -> dict[str, list[str]]:
        f = self.findings
        named = {
            "lost": f.lost, "not dead-lettered": f.not_dead_lettered, "doubled": f.doubled,
            "wrongly rejected": f.wrongly_rejected, "unexpected": f.unexpected,
            "reordered": f.reordered, "read model vs simulation": f.model_mismatches,
            "rebuild differs": self.diffs, "resolver RPC": self.rpc_failures,
            "exited by themselves": self.exits, "no heartbeat": self.no_heartbeat,
            "not drained": self.not_drained,
            "restored system differs": self.restore.differences,
            "restored system appended": [f"{self.restore.new_events} events"]
            if self.restore.new_events else [],
        }  # fmt: skip
        return {name: items for name, items in named.items() if items}


def check_environment(config: FaultConfig, server: EmbeddedServer) -> None:
    """The service processes inherit os.environ: it must name ``server`` and ``config``."""
    wrong = {k: os.environ.get(k) for k, v in config.env().items() if os.environ.get(k) != v}
    if wrong:
        raise RuntimeError(f"set these for the service processes first: {config.env()}; "
                           f"differing now: {wrong}")  # fmt: skip
    if os.environ.get("REDIS_URL") != server.url:
        raise RuntimeError(f"REDIS_URL must be {server.url} for the service processes")


@dataclass
class Load:
    """What was published under faults, and how the system came to rest afterwards."""

    ledger: Ledger
    ids: ProfileIds
    members: list[MemberSim]
    publish_s: float
    drain_s: float
    no_heartbeat: list[str]
    not_drained: list[str]


async def publish_under_faults(
    config: FaultConfig,
    client: aioredis.Redis,
    outside: aioredis.Redis,
    injector: FaultInjector,
    say: Say,
) -> Load:
    """Register the catalog, publish the load (as the publisher user, ``outside``) while
    ``injector`` strikes and restarts what exits by itself, then wait for every service and
    for the drain."""
    ledger = Ledger()
    ids = ProfileIds(client, config.partitions)
    publisher = Publisher(outside, config, ledger)
    catalog, registrations = make_catalog(config)
    say(f"registering {len(registrations)} images of {config.members} members...")
    await register_catalog(client, publisher, ids, registrations)
    generator = LoadGenerator(config, catalog, ids)
    total = max(0, config.events - ledger.sent)
    say(f"publishing {total:,} messages at {config.rate:,.0f}/s while injecting "
        f"{config.faults} service kills and {config.server_restarts} server restart(s)...")  # fmt: skip
    started = time.monotonic()
    stop = asyncio.Event()
    watcher = asyncio.create_task(injector.watch(stop))
    try:
        await asyncio.gather(publisher.run(generator, ids, total, say), injector.run())
        publish_s = time.monotonic() - started
        say("faults done; waiting until every service is alive again, then draining...")
        no_heartbeat = await injector.settle(120.0)
        behind = await drain(client, config, say)
        drain_s = time.monotonic() - started - publish_s
    except BaseException:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        raise
    stop.set()
    await watcher
    await ids.scan()
    return Load(ledger, ids, generator.members, publish_s, drain_s, no_heartbeat, behind)


def _connect(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=2)


async def run_faults(
    config: FaultConfig, server: EmbeddedServer, data_dir: Path, say: Say = stderr
) -> FaultReport:
    """One whole fault run against ``server`` (started, owned by the caller, killable).

    ``REDIS_URL`` must name ``server`` and ``config.env()`` must be in os.environ: the
    service processes inherit both.
    """
    check_environment(config, server)
    settings = config.settings(server.url)
    started = time.monotonic()
    stack = Stack(data_dir, replicas=config.replicas, quiet=True, acl=config.acl)
    users = "each as its own ACL user" if config.acl else "without ACL users"
    say(f"starting {len(SERVICES)} services x {config.replicas} replicas on {server.url} "
        f"({users})...")  # fmt: skip
    await asyncio.to_thread(stack.start, 120.0)
    client, outside = _connect(server.url), _connect(stack.publisher_url)
    injector = FaultInjector(stack, server, config, say)
    restored = RestoreReport()
    try:
        load = await publish_under_faults(config, client, outside, injector, say)
        say("checking the log, the dead letters and the read models...")
        findings = await check(client, config, load.ledger, load.members, load.ids)
        say("rebuilding every read model from the log and comparing with the live ones...")
        verification, rebuild_s = await rebuild_and_verify(client, settings)
        rpc = await rpc_answers(server.url, config, member_ids(config.members))
        exits = unexpected_exits(stack)
        no_heartbeat = load.no_heartbeat + await asyncio.to_thread(all_alive, stack, server.url)
        if config.restore:
            say("export -> import into an empty server -> start the services there...")
            restored = await restore_cycle(
                settings, server.url, member_ids(config.members), data_dir, say, config.acl
            )
    finally:
        await client.aclose()
        await outside.aclose()
        await asyncio.to_thread(stack.stop)
    return FaultReport(
        config=config, ledger=load.ledger, findings=findings, faults=injector.log,
        diffs=verification.differences, compared=verification.compared,
        skipped=verification.skipped, seconds=time.monotonic() - started,
        publish_s=load.publish_s, drain_s=load.drain_s, rebuild_s=rebuild_s,
        not_drained=load.not_drained, rpc_failures=rpc,
        exits=injector.log.crashes + injector.log.exited_before_kill + exits,
        no_heartbeat=no_heartbeat, service_logs=service_log_findings(data_dir),
        restore=restored,
    )  # fmt: skip
