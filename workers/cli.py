"""The service's commands, added to ``nnverify``: serve, worker, token, submit.

The console script enters here; ``verify``, ``check`` and the other library commands come from
``verifier.cli`` unchanged. Service packages are imported only by the command that needs them.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nnverify`` script: the library's commands plus the service's."""
    from verifier import cli

    return cli.main(argv, extend=add_commands)


def add_commands(sub) -> None:
    """Register the service subcommands on the library CLI's subparsers."""
    s = sub.add_parser("serve", help="run the HTTP API (and, with --workers N, a worker of N processes)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--workers", type=int, default=0, help="also start a worker with this many processes")
    s.set_defaults(func=cmd_serve)
    w = sub.add_parser("worker", help="run a Celery worker for verification jobs")
    w.add_argument("--queues", default="cpu", help="comma-separated: gpu, cpu (default cpu)")
    w.add_argument("--concurrency", type=int, default=1, help="worker processes (one job each at a time)")
    w.add_argument("--loglevel", default="INFO")
    w.set_defaults(func=cmd_worker)
    t = sub.add_parser("token", help="API tokens: `token create TENANT` prints a new token")
    t.add_argument("action", choices=["create"])
    t.add_argument("tenant")
    t.set_defaults(func=cmd_token)
    c = sub.add_parser("submit", help="submit a job to a server (HTTP; no torch needed)")
    c.add_argument("model")
    c.add_argument("spec")
    c.add_argument("--server", default=os.environ.get("NNVERIFY_SERVER", "http://127.0.0.1:8000"))
    c.add_argument("--token", default=os.environ.get("NNVERIFY_TOKEN"), help="API token (or NNVERIFY_TOKEN)")
    c.add_argument("--timeout", type=float, help="verification budget in seconds")
    c.add_argument("--method", default="auto")
    c.add_argument("--priority", type=int, default=5, help="0 (first) .. 9 (last)")
    c.add_argument("--wait", action="store_true", help="wait for the verdict and print the result block")
    c.add_argument("--json", action="store_true", help="print the job as JSON")
    c.set_defaults(func=cmd_submit)


def _need_service() -> None:
    try:
        import celery  # noqa: F401
        import fastapi  # noqa: F401
    except ImportError as exc:
        raise SystemExit(f"nnverify: the service needs its extras: pip install 'nnverify[service]' ({exc})") from None


def cmd_serve(args) -> int:
    """Run the API in the foreground until interrupted (with its worker as a child process)."""
    _need_service()
    import uvicorn

    child = None
    if args.workers:
        child = subprocess.Popen([sys.executable, "-m", "workers.cli", "worker", "--queues", "gpu,cpu",
                                  "--concurrency", str(args.workers)])
    try:
        uvicorn.run("workers.api.app:create_app", factory=True, host=args.host, port=args.port,
                    log_level="info", timeout_graceful_shutdown=5)
    finally:
        if child is not None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
    return 0


def cmd_worker(args) -> int:
    """Run a Celery worker (prefork pool) on the given queues."""
    _need_service()
    from workers import tasks

    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    unknown = sorted(set(queues) - {"gpu", "cpu"})
    if unknown or not queues:
        print(f"nnverify: error: unknown queue(s) {', '.join(unknown) or '(none)'}; use gpu and/or cpu", file=sys.stderr)
        return 2
    tasks.REGISTRATION.update(queues=queues, concurrency=args.concurrency)
    settings = tasks.settings()
    tasks.app.worker_main(["worker", "-Q", ",".join(settings.queue(q) for q in queues), "-c", str(args.concurrency),
                           "-P", "prefork", f"--loglevel={args.loglevel}", "-n", f"nnverify-{os.getpid()}@%h",
                           "--without-gossip", "--without-mingle"])
    return 0


def cmd_token(args) -> int:
    """Create a token for a tenant and print it (only its hash is stored)."""
    _need_service()
    from workers.settings import Settings
    from workers.store import Store

    print(Store(Settings.from_env().database_url).create_token(args.tenant))
    return 0


def cmd_submit(args) -> int:
    """Submit a job; with --wait, print its VNN-COMP result block (or the job JSON)."""
    import json

    from workers.client import Client, ServiceError

    if not args.token:
        print("nnverify: error: no API token (--token or NNVERIFY_TOKEN)", file=sys.stderr)
        return 2
    client = Client(args.server, args.token)
    try:
        job_id = client.submit(args.model, args.spec, args.timeout, args.method, args.priority)
        job = client.wait(job_id) if args.wait else client.job(job_id)
        text = client.text(job_id, "result") if args.wait and job["state"] == "done" else None
    except (ServiceError, OSError) as exc:
        print(f"nnverify: error: {exc}", file=sys.stderr)
        return 2
    if args.json or text is None:
        print(json.dumps(job, indent=1))
    else:
        print(text, end="")
        print(f"; {job['verdict']}: {job['reason']} (job {job_id})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
