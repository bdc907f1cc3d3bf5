"""The faults of a fault run: SIGKILL of service processes (restarted after a short delay)
and of the server (restarted on the same port and data directory), SIGSTOP of a lease holder
past its lease, at seeded moments; and what ``make run``'s supervisor does meanwhile:
restart a service that exited by itself."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.exceptions import RedisError

from shared.adapters.lifecycle import alive_key
from shared.adapters.server import EmbeddedServer
from shared.adapters.store import text
from shared.keys import Partition
from tools.supervisor import SERVICES, Stack

from .config import FaultConfig, Say


@dataclass(frozen=True)
class Fault:
    moment: float
    target: str
    replica: int
    delay: float


@dataclass
class FaultLog:
    kills: list[tuple[float, str, int]] = field(default_factory=list)
    server_restarts: list[float] = field(default_factory=list)
    pauses: list[str] = field(default_factory=list)
    spawn_retries: int = 0
    exited_before_kill: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)


class FaultInjector:
    """SIGKILL service processes and the server at seeded moments; restart each shortly after."""

    def __init__(self, stack: Stack, server: EmbeddedServer, config: FaultConfig, say: Say) -> None:
        self.stack = stack
        self.server = server
        self.config = config
        self.say = say
        self.rng = random.Random(f"{config.seed}/faults")
        self.log = FaultLog()
        self.down: set[tuple[str, int]] = set()
        self.started = time.monotonic()
        self.server_lock = asyncio.Lock()
        self.server_thread = ThreadPoolExecutor(1, thread_name_prefix="server")

    def schedule(self) -> list[Fault]:
        """Each service killed ``faults / 4`` times (a random replica each time), the server
        restarted ``server_restarts`` times in the middle of the window, at seeded moments."""
        services = list(SERVICES)
        self.rng.shuffle(services)
        targets = [services[n % len(services)] for n in range(self.config.faults)]
        targets += ["server"] * self.config.server_restarts
        targets += ["pause"] * self.config.pauses
        faults = []
        for target in targets:
            span = (0.3, 0.7) if target in ("server", "pause") else (0.05, 0.95)
            moment = self.rng.uniform(*span) * self.config.window
            replica = self.rng.randrange(self.config.replicas)
            faults.append(Fault(moment, target, replica, self.rng.uniform(0.2, 2.0)))
        return sorted(faults, key=lambda f: f.moment)

    async def run(self) -> None:
        self.started = time.monotonic()
        await asyncio.gather(*(self._at(fault) for fault in self.schedule()))

    async def _at(self, fault: Fault) -> None:
        await asyncio.sleep(max(0.0, self.started + fault.moment - time.monotonic()))
        if fault.target == "server":
            await self._restart_server(fault.delay)
        elif fault.target == "pause":
            await self._pause_lease_holder()
        else:
            await self._kill_service(fault.target, fault.replica, fault.delay)

    async def _kill_service(self, service: str, replica: int, delay: float) -> None:
        while (service, replica) in self.down:
            await asyncio.sleep(0.1)
        self.down.add((service, replica))
        process = self.stack.processes[(service, replica)]
        if process.poll() is not None:
            self.log.exited_before_kill.append(f"{service}-{replica}: {process.returncode}")
            self.say(f"  !! {service}-{replica} had already exited ({process.returncode})")
        process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(process.wait)
        at = time.monotonic() - self.started
        self.log.kills.append((at, service, replica))
        self.say(f"  fault {len(self.log.kills)}: kill -9 {service}-{replica} at {at:.1f}s; "
                 f"restart in {delay:.1f}s")  # fmt: skip
        await asyncio.sleep(delay)
        await self._spawn(service, replica)
        self.down.discard((service, replica))

    async def _spawn(self, service: str, replica: int) -> None:
        """Restart one service process; retried while the server is down (each attempt is
        short, so that the threads stay free for the server's own restart)."""
        deadline = time.monotonic() + 60
        while True:
            try:
                await asyncio.to_thread(self.stack.spawn, service, replica)
                return
            except (RedisError, OSError):
                self.log.spawn_retries += 1
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def watch(self, stop: asyncio.Event) -> None:
        """What ``make run``'s supervisor does: restart a service process that exited by
        itself. Each such exit is recorded: a service should ride out a server outage."""
        while not stop.is_set():
            await self.restart_exited()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    async def restart_exited(self) -> None:
        for service, replica in list(self.stack.processes):
            process = self.stack.processes[(service, replica)]
            if (service, replica) in self.down or process.poll() is None:
                continue
            self.down.add((service, replica))
            name = f"{service}-{replica}"
            why = last_error(self.stack.data_dir / "logs" / f"{name}.log")
            at = time.monotonic() - self.started
            self.log.crashes.append(
                f"{name} exited by itself ({process.returncode}) at {at:.1f}s: {why}"
            )
            self.say(f"  !! {name} exited by itself with {process.returncode} at {at:.1f}s "
                     f"({why}); restarting it")  # fmt: skip
            await self._spawn(service, replica)
            self.down.discard((service, replica))

    async def settle(self, timeout: float) -> list[str]:
        """Wait until every service process has a heartbeat again; returns those without."""
        deadline = time.monotonic() + timeout
        while True:
            await self.restart_exited()
            try:
                missing = await asyncio.to_thread(all_alive, self.stack, self.server.url)
            except (RedisError, OSError) as error:
                missing = [f"server: {error!r}"]
            if not missing or time.monotonic() > deadline:
                return missing
            await asyncio.sleep(0.2)

    async def _pause_lease_holder(self) -> None:
        """SIGSTOP the replica holding a partition's lease for twice the lease time, then
        SIGCONT: it wakes up believing it still holds the partition, another replica has
        taken over meanwhile, and nothing may be lost or doubled."""
        role = self.rng.choice(["selection-ingest", "profile-projector", "code-minter"])
        partition = Partition(self.rng.randrange(self.config.partitions))
        holder, key = self._lease_holder(partition.lease(role))
        if key is None:
            self.say(f"  pause: no live holder of {partition.lease(role)} ({holder!r}); skipped")
            return
        self.down.add(key)
        process = self.stack.processes[key]
        stopped_s = 2 * self.config.claim_idle_ms / 1000
        at = time.monotonic() - self.started
        self.say(f"  pause: SIGSTOP {holder} (holds {partition.lease(role)}) at {at:.1f}s "
                 f"for {stopped_s:.1f}s")  # fmt: skip
        process.send_signal(signal.SIGSTOP)
        await asyncio.sleep(stopped_s)
        process.send_signal(signal.SIGCONT)
        self.log.pauses.append(f"{holder} at {at:.1f}s for {stopped_s:.1f}s")
        self.down.discard(key)

    def _lease_holder(self, lease: str) -> tuple[str, tuple[str, int] | None]:
        """The replica that holds ``lease``, and its process (None unless it is up)."""
        with redis.Redis.from_url(self.stack.url, socket_timeout=5) as client:
            try:
                holder = text(client.get(lease))
            except (RedisError, OSError):
                holder = ""
        found = [key for key in self.stack.processes if f"{key[0]}-{key[1]}" == holder]
        return holder, found[0] if found and found[0] not in self.down else None

    async def _restart_server(self, delay: float) -> None:
        async with self.server_lock:
            await self._kill_and_start_server(delay)

    async def _kill_and_start_server(self, delay: float) -> None:
        self.server.kill()
        at = time.monotonic() - self.started
        self.log.server_restarts.append(at)
        self.say(f"  server: kill -9 valkey at {at:.1f}s; restart in {delay:.1f}s")
        await asyncio.sleep(delay)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.server_thread, self.server.start, 60.0)
        self.say(f"  server: back at {time.monotonic() - self.started:.1f}s")


def last_error(log: Path) -> str:
    """The last exception line of a service's log (what made it exit)."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    errors = [line for line in lines if re.match(r"^[A-Za-z_.]*(Error|Exception)\b", line)]
    return errors[-1].strip()[:200] if errors else "no exception in its log"


def all_alive(stack: Stack, url: str) -> list[str]:
    with redis.Redis.from_url(url) as client:
        return [
            f"{service}-{replica} has no heartbeat"
            for service, replica in sorted(stack.processes)
            if not client.exists(alive_key(service, f"{service}-{replica}"))
        ]


def start_server(data_dir: Path) -> EmbeddedServer:
    """A killable server whose acknowledged writes survive kill -9 (fsync on every write)."""
    return EmbeddedServer(data_dir, appendfsync="always").start()
