"""A real ``redis-server`` (Debian's) for the online-store tests: a free loopback port, its own folder,
no persistence, stopped by its PID. ``make system-deps`` installs it (as ``.ci/run`` does)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisServer:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        """SIGTERM this server (by its PID) and wait for it; idempotent."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)


def start_redis(folder: Path, port: int | None = None, password: str | None = None) -> RedisServer:
    """Start ``redis-server`` on 127.0.0.1 (``password``: it requires it) and wait until it answers PING
    (well under a second)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "redis-server is not installed: run `make system-deps` (apt-get install redis-server)."
        )
    folder.mkdir(parents=True, exist_ok=True)
    port = port or _free_port()
    # --save '' and --appendonly no: nothing written to disk; --dir: its own folder all the same.
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    command += ["--dir", str(folder), "--daemonize", "no", "--loglevel", "warning"]
    command += ["--requirepass", password] if password else []
    log = (folder / "redis.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    server = RedisServer(process, port)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"redis-server exited with {process.returncode}: {(folder / 'redis.log').read_text()}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith((b"+PONG", b"-NOAUTH")):  # up (and wanting the password)
                    return server
        except OSError:
            pass
        time.sleep(0.02)
    server.stop()
    raise RuntimeError(f"redis-server did not answer on port {port} within 10 s")
