"""Real processes for live tests: the mock upstream, uvicorn, celery. Loopback only; always stopped."""

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """A subprocess serving HTTP on a free loopback port, waited for until `ready_path` answers."""

    def __init__(self, args: list[str], *, env: dict | None = None, ready_path: str = "/health", timeout: float = 30.0, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile()
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [arg.replace("{port}", str(self.port)) for arg in args], cwd=ROOT, env=full_env, stdout=self.log, stderr=self.log
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{args[:3]} exited early:\n{self.output()}")
            try:
                if httpx.get(self.url + ready_path, timeout=0.5).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{args[:3]} did not start:\n{self.output()}")
            time.sleep(0.05)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def start_mock_upstream(*extra: str) -> ServerProcess:
    return ServerProcess([sys.executable, "manage.py", "mock_llm_server", "--port", "{port}", *extra])


class MockControl:
    """Talks to a running mock upstream's control and stats endpoints."""

    def __init__(self, url: str):
        self.url = url

    def reset(self) -> None:
        httpx.post(self.url + "/_control", json={"reset": True}, timeout=5).raise_for_status()

    def control(self, **settings) -> None:
        httpx.post(self.url + "/_control", json=settings, timeout=5).raise_for_status()

    def stats(self) -> dict:
        return httpx.get(self.url + "/_stats", timeout=5).json()

    @property
    def requests(self) -> int:
        return self.stats()["requests"]


class RedisServer:
    """A private, non-persistent redis-server on a fixed free port: killed and restarted at will."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tempfile.TemporaryDirectory()
        self.proc: subprocess.Popen | None = None
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, socket_connect_timeout=2)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.dir.name,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with self.client() as client:
                    client.ping()
                return
            except redis.ConnectionError:
                assert self.proc.poll() is None, "redis-server exited"
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def kill(self) -> None:
        """A crash: SIGKILL, every connection reset, nothing persisted."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def stop(self) -> None:
        self.kill()
        self.dir.cleanup()
