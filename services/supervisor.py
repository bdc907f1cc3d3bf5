"""``make run``: the whole system on one machine.

Starts an embedded Valkey server (append-only file on, data in ``data/valkey``) unless
``REDIS_URL`` is set, then the four services as separate ``faststream run`` processes;
reports when every service is alive, restarts a service that dies, and stops everything
cleanly on Ctrl-C. Writes ``data/run.json`` so that ``make demo`` finds the running system.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from shared.acl import acl_rules, url_for, user_name
from shared.adapters.lifecycle import alive_key
from shared.adapters.server import EmbeddedServer, free_port, port_free
from shared.settings import Settings

SERVICES = {
    "selection-ingest": "services.selection_ingest.app:app",
    "profile-projector": "services.profile_projector.app:app",
    "code-minter": "services.code_minter.app:app",
    "prompt-resolver": "services.prompt_resolver.app:app",
}
RUN_FILE = Path("data/run.json")


def service_command(service: str) -> list[str]:
    return [sys.executable, "-m", "faststream", "run", SERVICES[service]]


class Stack:
    """The server (if embedded) and every service process of one ``make run``."""

    def __init__(
        self, data_dir: Path, replicas: int = 1, quiet: bool = False, acl: bool | None = None
    ) -> None:
        self.data_dir = data_dir
        self.replicas = replicas
        self.quiet = quiet
        self.server: EmbeddedServer | None = None
        self.processes: dict[tuple[str, int], subprocess.Popen[bytes]] = {}
        self.url = os.environ.get("REDIS_URL", "")
        wanted = os.environ.get("PZ_ACL")
        self.acl = acl if acl is not None else (wanted == "1" if wanted else not self.url)
        self.passwords = {service: secrets.token_urlsafe(18) for service in SERVICES}

    def start(self, timeout: float = 60.0) -> None:
        if not self.url:
            fsync = os.environ.get("PZ_APPENDFSYNC", "everysec")
            port = int(os.environ.get("PZ_PORT", "6379"))
            port = port if port_free(port) else free_port()
            self.server = EmbeddedServer(
                self.data_dir / "valkey", port=port, appendfsync=fsync
            ).start()
            self.url = self.server.url
            self.say(f"embedded valkey on {self.url} (AOF {fsync}, data in {self.data_dir}/valkey)")
        if self.acl:
            self.restrict()
        for service in SERVICES:
            for replica in range(self.replicas):
                self.spawn(service, replica)
        self.wait_alive(timeout)

    def restrict(self) -> None:
        """One ACL user per service, allowed only its own keys (shared/acl.py)."""
        with redis.Redis.from_url(self.url) as client:
            for service, password in self.passwords.items():
                client.execute_command(
                    "ACL", "SETUSER", user_name(service), *acl_rules(service, password)
                )
        self.say("  each service connects as its own ACL user (least privilege)")

    def env(self, service: str, replica: int) -> dict[str, str]:
        name = f"{service}-{replica}"
        url = url_for(self.url, service, self.passwords[service]) if self.acl else self.url
        return {**os.environ, "REDIS_URL": url, "PZ_REPLICA": name, "PYTHONUNBUFFERED": "1"}

    def spawn(self, service: str, replica: int) -> None:
        with redis.Redis.from_url(self.url) as client:
            client.delete(alive_key(service, f"{service}-{replica}"))
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = open(logs / f"{service}-{replica}.log", "ab")  # noqa: SIM115
        self.processes[(service, replica)] = subprocess.Popen(
            service_command(service),
            env=self.env(service, replica),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_alive(self, timeout: float) -> None:
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + timeout
        pending = {(s, r) for s in SERVICES for r in range(self.replicas)}
        while pending:
            for service, replica in sorted(pending):
                if client.exists(alive_key(service, f"{service}-{replica}")):
                    pending.discard((service, replica))
                    self.say(f"  ready: {service} (replica {replica})")
                elif self.processes[(service, replica)].poll() is not None:
                    raise RuntimeError(
                        f"{service} exited; see {self.data_dir}/logs/{service}-{replica}.log"
                    )
            if time.monotonic() > deadline:
                raise TimeoutError(f"not alive after {timeout}s: {sorted(pending)}")
            time.sleep(0.1)
        client.close()

    def watch(self) -> None:
        """Restart any service that exits, until interrupted."""
        while True:
            for (service, replica), process in list(self.processes.items()):
                if process.poll() is not None:
                    self.say(
                        f"{service} (replica {replica}) exited with {process.returncode}; restarting"
                    )
                    self.spawn(service, replica)
            time.sleep(0.5)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.server is not None:
            self.server.stop()

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data"), help="data folder")
    parser.add_argument("--replicas", type=int, default=1, help="processes per service")
    args = parser.parse_args()
    settings = Settings.from_env()
    stack = Stack(args.data, args.replicas)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        stack.start()
        RUN_FILE.parent.mkdir(parents=True, exist_ok=True)
        RUN_FILE.write_text(json.dumps({"redis_url": stack.url, "partitions": settings.partitions}))
        print(
            f"all {len(SERVICES)} services are up on {stack.url} "
            f"({settings.partitions} partitions). Logs: {args.data}/logs. "
            "Try `make demo` in another terminal; Ctrl-C stops everything.",
            flush=True,
        )
        stack.watch()
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
    finally:
        stack.stop()
        RUN_FILE.unlink(missing_ok=True)
        print("stopped.", flush=True)


if __name__ == "__main__":
    main()
