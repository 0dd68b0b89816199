"""A small HTTP client of the service (standard library only: no torch, no extras)."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path


class ServiceError(RuntimeError):
    """The service answered with an error status."""

    def __init__(self, status: int, detail: str):
        super().__init__(f"HTTP {status}: {detail}")
        self.status, self.detail = status, detail


class Client:
    """Submit jobs and read them back from an nnverify server."""

    def __init__(self, server: str, token: str, timeout: float = 60.0):
        self.server, self.token, self.timeout = server.rstrip("/"), token, timeout

    def submit(self, model: str, spec: str, timeout: float | None = None, method: str = "auto",
               priority: int = 5) -> str:
        """Upload the two files; the new job's id."""
        fields = {"method": method, "priority": str(priority)}
        if timeout is not None:
            fields["timeout"] = str(timeout)
        files = {"model": Path(model), "spec": Path(spec)}
        body, ctype = _multipart(fields, files)
        return self._call("POST", "/v1/jobs", body, ctype)["id"]

    def job(self, job_id: str) -> dict:
        return self._call("GET", f"/v1/jobs/{job_id}")

    def text(self, job_id: str, what: str) -> str:
        """``result`` (the VNN-COMP block), ``certificate`` or ``counterexample`` as text."""
        return self._call("GET", f"/v1/jobs/{job_id}/{what}", raw=True)

    def cancel(self, job_id: str) -> dict:
        return self._call("DELETE", f"/v1/jobs/{job_id}")

    def wait(self, job_id: str, poll: float = 0.5, limit: float | None = None) -> dict:
        """Poll until the job is final (or ``limit`` seconds pass); its last state."""
        end = None if limit is None else time.monotonic() + limit
        while True:
            job = self.job(job_id)
            if job["state"] in ("done", "failed", "cancelled") or (end is not None and time.monotonic() > end):
                return job
            time.sleep(poll)

    def _call(self, method: str, path: str, body: bytes | None = None, ctype: str | None = None, raw=False):
        req = urllib.request.Request(self.server + path, data=body, method=method,
                                     headers={"Authorization": f"Bearer {self.token}"})
        if ctype:
            req.add_header("Content-Type", ctype)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                data = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            try:
                detail = json.loads(detail).get("detail", detail)
            except (ValueError, AttributeError):
                pass
            raise ServiceError(exc.code, str(detail)) from None
        return data.decode() if raw else json.loads(data)


def _multipart(fields: dict[str, str], files: dict[str, Path]) -> tuple[bytes, str]:
    """A multipart/form-data body and its content type."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, path in files.items():
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{path.name}"\r\n'
                f"Content-Type: application/octet-stream\r\n\r\n").encode()
        parts.append(head + path.read_bytes() + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
