"""A local service stack in subprocesses (API + workers) for tests, benchmarks and ``make serve``."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from workers.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalStack:
    """The API on a free loopback port and worker processes, all sharing one environment."""

    def __init__(self, data: Path, env: dict[str, str] | None = None, log_dir: Path | None = None):
        self.data = Path(data)
        self.env = dict(os.environ, NNVERIFY_DATA=str(self.data), **(env or {}))
        self.log_dir = Path(log_dir or self.data / "logs")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.env)

    def _spawn(self, args: list[str], name: str) -> subprocess.Popen:
        out = open(self.log_dir / f"{name}.log", "ab")
        return subprocess.Popen([sys.executable, "-m", "workers.cli", *args], env=self.env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def start_api(self) -> None:
        self.api = self._spawn(["serve", "--port", str(self.port)], "api")
        self._wait_http("/healthz", 30)

    def start_worker(self, queues: str = "gpu,cpu", concurrency: int = 1, ready: float = 60.0) -> subprocess.Popen:
        """Start a worker and wait until it has registered and its processes are warm."""
        from workers.events import Keys, client, registered_workers, warm_processes

        proc = self._spawn(["worker", "--queues", queues, "--concurrency", str(concurrency), "--loglevel", "INFO"],
                           f"worker-{len(self.workers)}")
        self.workers.append(proc)
        r, keys = client(self.settings), Keys(self.settings)
        end = time.monotonic() + ready
        while time.monotonic() < end:
            if (any(w["pid"] == proc.pid for w in registered_workers(r, keys))
                    and warm_processes(r, keys, proc.pid) >= concurrency):
                return proc
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.returncode}; see {self.log_dir}")
            time.sleep(0.2)
        raise RuntimeError(f"worker did not register within {ready}s; see {self.log_dir}")

    def kill_worker(self, proc: subprocess.Popen, sig=signal.SIGKILL) -> None:
        """Signal the worker's whole process group (its pool processes die with it)."""
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        proc.wait(30)

    def token(self, tenant: str) -> str:
        out = subprocess.run([sys.executable, "-m", "workers.cli", "token", "create", tenant], env=self.env,
                             capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def _wait_http(self, path: str, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                with urllib.request.urlopen(self.url + path, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            if self.api is not None and self.api.poll() is not None:
                raise RuntimeError(f"API exited with {self.api.returncode}; see {self.log_dir}")
            time.sleep(0.2)
        raise RuntimeError(f"API did not answer {path} within {seconds}s")

    def stop(self) -> None:
        procs = [p for p in [self.api, *self.workers] if p is not None and p.poll() is None]
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
