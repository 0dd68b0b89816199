"""The nnverify service: HTTP API, Celery tasks, job store. Wraps ``verifier`` and never the reverse."""
