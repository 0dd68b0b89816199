"""Content-addressed files: models, specs, certificates, counterexamples, stored once by sha256."""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

_SHA = re.compile(r"^[0-9a-f]{64}$")


class Blobs:
    """A folder of files named by the sha256 of their bytes (``ab/abcdef...``)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha: str) -> Path:
        """Where the blob ``sha`` lives (``sha`` must be a hex digest: nothing user-supplied is a path)."""
        if not _SHA.match(sha):
            raise ValueError(f"not a sha256 digest: {sha!r}")
        return self.root / sha[:2] / sha

    def put(self, data: bytes) -> str:
        """Store ``data`` (once) and return its sha256."""
        sha = hashlib.sha256(data).hexdigest()
        target = self.path(sha)
        if target.exists():
            return sha
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".put-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)   # atomic: a reader never sees half a blob
        return sha

    def get(self, sha: str) -> bytes:
        """The bytes of blob ``sha`` (FileNotFoundError when absent)."""
        return self.path(sha).read_bytes()