"""``make run``: the whole system on one machine.

Starts an embedded Valkey server (append-only file on, data in ``data/valkey``) unless
``REDIS_URL`` is set, then the services as separate ``faststream run`` processes; reports
when every service is alive, restarts a service that dies (and the embedded server, if it
dies), and stops everything cleanly on Ctrl-C. Writes ``data/run.json`` (mode 0600) so that
``make demo`` and the ops tools find the running system.

On the embedded server the ``default`` user is switched off. ``data/credentials.json``
(mode 0600, created once, printed once) keeps the passwords of ``admin`` (the supervisor and
ops tools) and ``publisher`` (outside services: inboxes, RPC, receipts; shared/acl.py);
each service gets a user of its own with a fresh password on every start. Users are saved
to the server's ACL file, so they survive a restart of the server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import redis

from shared.acl import ADMIN, PUBLISHER, acl_rules, url_for, user_name
from shared.adapters.lifecycle import alive_key
from shared.adapters.server import EmbeddedServer, free_port, port_free
from shared.settings import Settings, run_file

SERVICES = {
    "selection-ingest": "services.selection_ingest.app:app",
    "selection-grid": "services.selection_ingest.grid_app:app",
    "profile-projector": "services.profile_projector.app:app",
    "code-minter": "services.code_minter.app:app",
    "prompt-resolver": "services.prompt_resolver.app:app",
}
RUN_FILE = run_file()
QUICK_EXIT_S = 10.0  # a service that dies sooner than this after its start is restarted later
MAX_BACKOFF_S = 30.0


def service_command(service: str) -> list[str]:
    return [sys.executable, "-m", "faststream", "run", SERVICES[service]]


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (it holds passwords)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.chmod(partial, 0o600)
    os.replace(partial, path)


class Credentials:
    """The passwords that outlive one ``make run``: ``admin`` and ``publisher``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.created = not path.exists()
        stored: dict[str, str] = {} if self.created else json.loads(path.read_text())
        self.passwords = {
            user: stored.get(user) or secrets.token_urlsafe(24) for user in (ADMIN, PUBLISHER)
        }
        if self.passwords != stored:
            write_private(path, json.dumps(self.passwords, indent=2) + "\n")

    def __getitem__(self, user: str) -> str:
        return self.passwords[user]


class Stack:
    """The server (if embedded) and every service process of one ``make run``.

    ``url`` is the admin's URL (what tests and ops tools use), ``publisher_url`` the one
    outside services use; with ``REDIS_URL`` set, that URL is the admin.
    """

    def __init__(
        self, data_dir: Path, replicas: int = 1, quiet: bool = False, acl: bool | None = None
    ) -> None:
        self.data_dir = data_dir
        self.replicas = replicas
        self.quiet = quiet
        self.server: EmbeddedServer | None = None
        self.processes: dict[tuple[str, int], subprocess.Popen[bytes]] = {}
        self.url = os.environ.get("REDIS_URL", "")
        self.server_url = self.url
        self.publisher_url = self.url
        wanted = os.environ.get("PZ_ACL")
        self.acl = acl if acl is not None else (wanted == "1" if wanted else not self.url)
        self.passwords = {service: secrets.token_urlsafe(18) for service in SERVICES}
        self.credentials: Credentials | None = None
        self.started: dict[tuple[str, int], float] = {}
        self.backoff: dict[tuple[str, int], float] = {}
        self.restart_at: dict[tuple[str, int], float] = {}

    def start(self, timeout: float = 60.0) -> None:
        if self.acl or not self.url:
            self.credentials = Credentials(self.data_dir / "credentials.json")
        if not self.url:
            self.start_server()
        if self.acl:
            self.restrict()
        elif self.server is not None:
            self.open_default_user()
        for service in SERVICES:
            for replica in range(self.replicas):
                self.spawn(service, replica)
        self.wait_alive(timeout)

    def start_server(self) -> None:
        assert self.credentials is not None
        fsync = os.environ.get("PZ_APPENDFSYNC", "everysec")
        port = int(os.environ.get("PZ_PORT", "6379"))
        port = port if port_free(port) else free_port()
        self.server = EmbeddedServer(
            self.data_dir / "valkey", port=port, appendfsync=fsync,
            auth=(ADMIN, self.credentials[ADMIN]),
        ).start()  # fmt: skip
        self.server_url = self.url = self.publisher_url = self.server.url
        self.say(f"embedded valkey on {self.url} (AOF {fsync}, data in {self.data_dir}/valkey)")

    def admin(self) -> redis.Redis:
        """A connection with every right: the admin user on the embedded server (created
        here on its first start, as the default user), else ``REDIS_URL`` as given."""
        if self.server is None:
            return redis.Redis.from_url(self.url)
        assert self.credentials is not None
        url = url_for(self.server_url, ADMIN, self.credentials[ADMIN])
        client = redis.Redis.from_url(url)
        try:
            wait_until_loaded(client)
        except redis.AuthenticationError:
            client.close()
            self._create_admin()
            client = redis.Redis.from_url(url)
        self.url = url
        return client

    def _create_admin(self) -> None:
        assert self.credentials is not None
        try:
            with redis.Redis.from_url(self.server_url) as default:
                wait_until_loaded(default)
                default.execute_command(
                    "ACL", "SETUSER", ADMIN, *acl_rules(ADMIN, self.credentials[ADMIN])
                )
        except redis.AuthenticationError:
            raise RuntimeError(
                f"the server in {self.data_dir}/valkey refuses the admin password of "
                f"{self.credentials.path} and has no open default user: restore that file, "
                f"or delete {self.data_dir}/valkey/users.acl to start over with new users"
            ) from None
        self.say(f"  created the admin user on {self.server_url}")

    def restrict(self) -> None:
        """One ACL user per service, allowed only its own commands and keys, a publisher
        user for outside services (shared/acl.py), and, on the embedded server, no
        default user; then ACL SAVE, so that a restarted server still knows them."""
        assert self.credentials is not None
        passwords = {**self.passwords, PUBLISHER: self.credentials[PUBLISHER]}
        with self.admin() as client:
            for user, password in passwords.items():
                client.execute_command(
                    "ACL", "SETUSER", user_name(user), *acl_rules(user, password)
                )
            if self.server is not None:
                client.execute_command("ACL", "SETUSER", "default", "reset")
            self.save_users(client)
        self.publisher_url = url_for(self.server_url, PUBLISHER, self.credentials[PUBLISHER])
        self.say("  each service connects as its own ACL user (least privilege)")
        if self.credentials.created:
            self.say(f"  admin (ops tools; also in data/run.json): {self.url}")
            self.say(f"  publisher (outside services):             {self.publisher_url}")
            self.say(f"  (printed once; kept in {self.credentials.path}, mode 0600)")
        else:
            self.say(f"  admin and publisher passwords: {self.credentials.path}")

    def open_default_user(self) -> None:
        """``PZ_ACL=0`` on the embedded server: no users, the default one may do anything."""
        with self.admin() as client:
            client.execute_command("ACL", "SETUSER", "default", "reset", "on", "nopass",
                                   "~*", "&*", "+@all")  # fmt: skip
            self.save_users(client)
        self.url = self.publisher_url = self.server_url

    def save_users(self, client: redis.Redis) -> None:
        try:
            client.execute_command("ACL", "SAVE")
        except redis.ResponseError as error:
            self.say(
                f"  warning: ACL SAVE failed ({error}): the users are lost if the server restarts"
            )

    def env(self, service: str, replica: int) -> dict[str, str]:
        name = f"{service}-{replica}"
        url = url_for(self.server_url, service, self.passwords[service]) if self.acl else self.url
        return {**os.environ, "REDIS_URL": url, "PZ_REPLICA": name, "PYTHONUNBUFFERED": "1"}

    def spawn(self, service: str, replica: int) -> None:
        with contextlib.suppress(redis.RedisError), redis.Redis.from_url(self.url) as client:
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
        self.started[(service, replica)] = time.monotonic()

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

    def watch(self, stop: threading.Event | None = None) -> None:
        """Restart the embedded server or any service that exits, until interrupted."""
        while stop is None or not stop.is_set():
            self.check()
            time.sleep(0.5)

    def check(self) -> None:
        """One round of :meth:`watch`: the server first, then the services."""
        if self.server is not None and not self.server.running():
            code = self.server.process.returncode if self.server.process else "?"
            self.say(f"the embedded server exited ({code}); restarting it on the same port")
            self.server.start()  # users come back from its ACL file
        now = time.monotonic()
        for key, process in list(self.processes.items()):
            if process.poll() is None:
                continue
            if key not in self.restart_at:
                quick = now - self.started.get(key, 0.0) < QUICK_EXIT_S
                delay = min(2 * self.backoff.get(key, 0.5), MAX_BACKOFF_S) if quick else 0.0
                self.backoff[key] = delay
                self.restart_at[key] = now + delay
                self.say(f"{key[0]} (replica {key[1]}) exited with {process.returncode}; "
                         f"restarting{f' in {delay:.0f}s' if delay else ''}")  # fmt: skip
            if now >= self.restart_at[key]:
                del self.restart_at[key]
                self.spawn(*key)

    def describe(self, partitions: int) -> dict[str, Any]:
        """What data/run.json says: the admin ``redis_url`` (ops tools and older readers
        use it), the ``publisher_url`` for outside services, and the partition count."""
        return {"redis_url": self.url, "publisher_url": self.publisher_url,
                "partitions": partitions}  # fmt: skip

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


def wait_until_loaded(client: redis.Redis, timeout: float = 120.0) -> None:
    """PING until the server has loaded its data (it answers LOADING until then)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            return
        except redis.BusyLoadingError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data"), help="data folder")
    parser.add_argument("--replicas", type=int, default=1, help="processes per service")
    args = parser.parse_args()
    settings = Settings.from_env({k: v for k, v in os.environ.items() if k != "PZ_RUN_FILE"})
    stack = Stack(args.data, args.replicas)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        stack.start()
        write_private(RUN_FILE, json.dumps(stack.describe(settings.partitions)) + "\n")
        print(
            f"all {len(SERVICES)} services are up on {stack.server_url} "
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
