"""A worker's heartbeat in Redis: which queues it serves, so the API can route and count."""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time

from workers.events import Keys, client
from workers.settings import Settings

log = logging.getLogger("nnverify.worker")
PERIOD = 5.0


class Registration:
    """Keeps ``nnverify:worker:<host:pid>`` alive while the worker runs."""

    def __init__(self, settings: Settings, queues: list[str], concurrency: int):
        self.settings, self.r, self.keys = settings, client(settings), Keys(settings)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.info = {"name": self.name, "queues": queues, "concurrency": concurrency, "pid": os.getpid(),
                     "started": time.time()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="registration", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        try:
            self.r.delete(self.keys.worker(self.name))
        except Exception as exc:
            log.warning("worker registration not removed: %s", exc)

    def _loop(self) -> None:
        while True:
            try:
                self.r.set(self.keys.worker(self.name), json.dumps(self.info), ex=int(3 * PERIOD))
            except Exception as exc:   # Redis restarting: keep trying
                log.warning("worker heartbeat failed: %s", exc)
            if self._stop.wait(PERIOD):
                return
