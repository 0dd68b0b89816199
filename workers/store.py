"""Jobs, API tokens and their rows (SQLAlchemy: SQLite by default, PostgreSQL by URL)."""
from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import (JSON, DateTime, Float, Integer, String, Text, create_engine, event, func, select,
                        update)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL = ("done", "failed", "cancelled")


class Base(DeclarativeBase):
    pass


class Token(Base):
    """An API token, stored as its sha256 only, mapped to a tenant."""

    __tablename__ = "tokens"
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class Job(Base):
    """One verification job: what was asked, where it is, what came out."""

    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="verify")   # verify | explain | nap
    model_sha256: Mapped[str] = mapped_column(String(64))
    spec_sha256: Mapped[str] = mapped_column(String(64))
    model_name: Mapped[str] = mapped_column(String(255), default="")
    spec_name: Mapped[str] = mapped_column(String(255), default="")
    options: Mapped[dict] = mapped_column(JSON, default=dict)
    queue: Mapped[str] = mapped_column(String(16), default="cpu")
    queue_reason: Mapped[str] = mapped_column(Text, default="")
    priority: Mapped[int] = mapped_column(Integer, default=5)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str] = mapped_column(String(255), default="")
    cancel_requested: Mapped[int] = mapped_column(Integer, default=0)
    verdict: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    result: Mapped[dict | None] = mapped_column(JSON, nullable=True)     # verify's JSON summary
    result_text: Mapped[str | None] = mapped_column(Text, nullable=True)  # the VNN-COMP block
    certificate_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    counterexample_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)   # time inside verify
    artifacts: Mapped[dict] = mapped_column(JSON, default=dict)            # name -> blob sha256 (analyses)
    audit_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    item_key: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Audit(Base):
    """An audit of a robustness claim: the plan's items, each checked by one job."""

    __tablename__ = "audits"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128), index=True)
    claim: Mapped[dict] = mapped_column(JSON)          # the claim as submitted (model/data name blobs)
    model_sha256: Mapped[str] = mapped_column(String(64))
    data_sha256: Mapped[str] = mapped_column(String(64))
    data_name: Mapped[str] = mapped_column(String(255), default="data.npz")
    items: Mapped[list] = mapped_column(JSON)          # the plan, without the property texts
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def is_job_id(text: str) -> bool:
    """Whether ``text`` is a canonical UUID (job ids are)."""
    try:
        return str(uuid.UUID(text)) == text
    except (ValueError, AttributeError, TypeError):
        return False


class Store:
    """Every database access of the service goes through here (scoped by tenant where it reads)."""

    def __init__(self, url: str):
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        Base.metadata.create_all(self.engine)
        self.session = sessionmaker(self.engine, expire_on_commit=False)

    # --- tokens ------------------------------------------------------------------------------

    def create_token(self, tenant: str) -> str:
        """A new random token for ``tenant``; only its digest is stored."""
        if not tenant or len(tenant) > 128:
            raise ValueError("tenant name must be 1-128 characters")
        token = "nnv_" + secrets.token_urlsafe(32)
        with self.session.begin() as s:
            s.add(Token(digest=token_digest(token), tenant=tenant, created_at=now()))
        return token

    def tenant_of(self, token: str) -> str | None:
        """The tenant a token belongs to, or None."""
        with self.session() as s:
            row = s.get(Token, token_digest(token))
            return row.tenant if row else None

    # --- jobs --------------------------------------------------------------------------------

    def add_job(self, **fields) -> Job:
        """Insert a queued job (its id is a new UUID)."""
        job = Job(id=str(uuid.uuid4()), state="queued", created_at=now(), **fields)
        with self.session.begin() as s:
            s.add(job)
        return job

    def job(self, job_id: str, tenant: str | None = None) -> Job | None:
        """The job, or None when absent or (with ``tenant``) another tenant's."""
        return self._owned(Job, job_id, tenant)

    def _owned(self, table, row_id: str, tenant: str | None):
        """Row ``row_id`` of ``table`` (a job or an audit), or None when absent or another tenant's."""
        if not is_job_id(row_id):
            return None
        with self.session() as s:
            row = s.get(table, row_id)
        if row is None or (tenant is not None and row.tenant != tenant):
            return None
        return row

    def jobs(self, tenant: str, state: str | None, limit: int, offset: int) -> tuple[list[Job], int]:
        """A page of the tenant's jobs, newest first, and how many match in all."""
        where = [Job.tenant == tenant] + ([Job.state == state] if state else [])
        with self.session() as s:
            rows = s.scalars(select(Job).where(*where).order_by(Job.created_at.desc(), Job.id)
                             .limit(limit).offset(offset)).all()
            total = s.scalar(select(func.count()).select_from(Job).where(*where))
        return list(rows), int(total or 0)

    def transition(self, job_id: str, allowed: tuple[str, ...], **values) -> bool:
        """Update the job only if its state is one of ``allowed``; True when it was updated."""
        with self.session.begin() as s:
            res = s.execute(update(Job).where(Job.id == job_id, Job.state.in_(allowed)).values(**values))
            return res.rowcount == 1

    def claim(self, job_id: str, worker: str) -> int | None:
        """Mark a queued (or stale running) job running; the new attempt number, or None if final."""
        with self.session.begin() as s:
            job = s.get(Job, job_id, with_for_update=True)
            if job is None or job.state in FINAL:
                return None
            job.state, job.worker, job.attempts = "running", worker, job.attempts + 1
            job.started_at = job.started_at or now()
            return job.attempts

    def finish(self, job_id: str, attempt: int, state: str, **values) -> bool:
        """Store a final outcome, only from the attempt that holds the job (a duplicate is ignored)."""
        with self.session.begin() as s:
            res = s.execute(update(Job).where(Job.id == job_id, Job.state == "running", Job.attempts == attempt)
                            .values(state=state, finished_at=now(), **values))
            return res.rowcount == 1

    def request_cancel(self, job_id: str) -> str:
        """Cancel a queued job at once, or flag a running one; the state afterwards."""
        if self.transition(job_id, ("queued",), state="cancelled", finished_at=now(), reason="cancelled before it ran"):
            return "cancelled"
        self.transition(job_id, ("running",), cancel_requested=1)
        job = self.job(job_id)
        return job.state if job else "missing"

    # --- audits ------------------------------------------------------------------------------

    def add_audit(self, audit_id: str, **fields) -> Audit:
        audit = Audit(id=audit_id, created_at=now(), **fields)
        with self.session.begin() as s:
            s.add(audit)
        return audit

    def audit(self, audit_id: str, tenant: str | None = None) -> Audit | None:
        """The audit, or None when absent or (with ``tenant``) another tenant's."""
        return self._owned(Audit, audit_id, tenant)

    def audit_jobs(self, audit_id: str) -> list[Job]:
        with self.session() as s:
            return list(s.scalars(select(Job).where(Job.audit_id == audit_id)).all())

    def counts(self) -> dict[str, int]:
        """Jobs by state (every tenant): for /metrics."""
        with self.session() as s:
            rows = s.execute(select(Job.state, func.count()).group_by(Job.state)).all()
        return {state: 0 for state in STATES} | {state: int(n) for state, n in rows}

    def seconds_summary(self) -> dict[str, tuple[int, float]]:
        """(count, total seconds) of finished verifications by verdict: for /metrics."""
        with self.session() as s:
            rows = s.execute(select(Job.verdict, func.count(), func.sum(Job.seconds))
                             .where(Job.seconds.is_not(None)).group_by(Job.verdict)).all()
        return {str(v): (int(n), float(t or 0.0)) for v, n, t in rows}


def _sqlite_pragmas(conn, _record) -> None:
    """WAL lets the API read while a worker writes."""
    cur = conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()
