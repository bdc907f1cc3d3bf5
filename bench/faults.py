"""``make faults``: kill -9 services and the server under load, then prove nothing was lost,
nothing doubled, and that a replay of the log reproduces the live read models.

Starts its own Valkey server (AOF, fsync on every write) and every service as processes,
publishes a seeded mixed load at a steady rate (with ~3% invalid messages that must be
dead-lettered and ~5% exact re-sends that must not double), SIGKILLs random service
processes and the server at random moments and restarts them, drains, then checks.
Progress goes to stderr; a table and, as the last line, one JSON object to stdout. The exit
status is 1 when anything was lost, doubled, reordered or differs. The run itself is
``tools.faults`` (simulation, injection, checks); this is its command line and table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

from tools.faults.config import FaultConfig, stderr
from tools.faults.harness import FaultReport, run_faults
from tools.faults.injection import start_server


def arguments() -> argparse.Namespace:
    defaults = FaultConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--events", type=int, default=defaults.events, help="messages to publish in all")
    add("--members", type=int, default=defaults.members, help="simulated members")
    add("--rate", type=float, default=defaults.rate, help="messages per second, steady")
    add("--duration", type=float, default=None, help="soft cap on publishing, in seconds")
    add("--faults", type=int, default=defaults.faults, help="service kills in all (>= 4)")
    add("--server-restarts", type=int, default=defaults.server_restarts)
    add("--pauses", type=int, default=defaults.pauses, help="lease holders SIGSTOPped")
    add("--no-acl", action="store_true", help="services without ACL users")
    add("--no-restore", action="store_true", help="skip the export -> import -> restart cycle")
    add("--replicas", type=int, default=defaults.replicas, help="processes per service")
    add("--partitions", type=int, default=defaults.partitions)
    add("--seed", type=int, default=defaults.seed)
    add("--claim-idle-ms", type=int, default=defaults.claim_idle_ms, help="lease / takeover time")
    add("--batch-size", type=int, default=defaults.batch_size, help="entries per read")
    add("--data", type=Path, default=None, help="data folder (default: a fresh temp folder)")
    return parser.parse_args()


def table(report: FaultReport) -> str:
    s = report.summary()
    rows = [
        ("messages published", f"{s['events_sent']:,} ({s['resent']:,} exact re-sends)"),
        ("  must be accepted once", f"{s['accepted']:,}"),
        ("  must be dead-lettered", f"{s['rejected']:,}"),
        ("XADDs re-sent after server errors", f"{s['retried_xadds']:,}"),
        ("service processes killed (kill -9)", f"{s['faults_injected']} ({s['replicas']} replicas each)"),
        ("server killed and restarted (ACL users on)" if s["acl"] else "server killed and restarted", f"{s['server_restarts']}"),
        ("lease holders paused past their lease (SIGSTOP/SIGCONT)", f"{s['lease_holder_pauses']}"),
        ("log events / codes / dead letters", f"{s['log_events']:,} / {s['codes']:,} / {s['dead_letters']:,}"),
        ("lost", f"{s['lost']}"),
        ("doubled", f"{s['doubled']}"),
        ("wrongly rejected / unexpected / reordered", f"{s['wrongly_rejected']} / {s['unexpected']} / {s['reordered']}"),
        ("read models vs client-side simulation", f"{s['model_mismatches']} mismatches"),
        ("rebuild vs live read models", f"{s['diffs']} differ, {s['verify_compared']:,} identical, {s['verify_skipped']} skipped"),
        ("resolver RPC after the faults", f"{s['rpc_failures']} failures"),
        ("export -> import -> restart: answers that differ", f"{s['restore_differences']} of {s['restore_compared']}"),
        ("  events the restored system appended by itself", f"{s['restore_new_events']}"),
        ("services that exited by themselves (restarted)", f"{s['unexpected_exits']}"),
        ("time: publish / drain / rebuild / all", f"{s['publish_s']}s / {s['drain_s']}s / {s['rebuild_s']}s / {s['seconds']}s"),
        ("throughput (published / (publish + drain))", f"{s['events_per_s']:,} messages/s"),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    lines = ["", f"| {'check':<{width}} | result |", f"|{'-' * (width + 2)}|--------|"]
    lines += [f"| {name:<{width}} | {value} |" for name, value in rows]
    for name, items in report.problems().items():
        lines.append(f"\n{name}: {len(items)}")
        lines += [f"  {item}" for item in items[:15]]
    for name, count in report.service_logs.items():
        if count:
            lines.append(f"service log: {name}: {count}")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> FaultReport:
    config = FaultConfig(
        events=args.events,
        members=args.members,
        rate=args.rate,
        duration=args.duration,
        faults=args.faults,
        server_restarts=args.server_restarts,
        pauses=args.pauses,
        acl=not args.no_acl,
        restore=not args.no_restore,
        replicas=args.replicas,
        partitions=args.partitions,
        seed=args.seed,
        claim_idle_ms=args.claim_idle_ms,
        batch_size=args.batch_size,
    )
    data = args.data or Path(tempfile.mkdtemp(prefix="pz-faults-"))
    stderr(f"data, logs and the server's append-only file in {data}")
    server = start_server(data / "valkey")
    os.environ["REDIS_URL"] = server.url
    os.environ.update(config.env())
    try:
        return await run_faults(config, server, data)
    finally:
        server.stop()


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop services and server too
    report = asyncio.run(main_async(arguments()))
    print(table(report))
    print(json.dumps(report.summary()))
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
