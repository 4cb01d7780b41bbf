"""Durable store of predictions and feedback: SQLite by default, PostgreSQL when configured.

Feedback is written before the API answers, so a 200 means the record is on disk. One
feedback per prediction: a unique index on (request_id, position) refuses a second one, so two
racing posts cannot both land (the service answers 409; see lmchain.serve.feedback).

Predictions go to one writer thread that inserts them in batches; each queued request can be
told when its rows are safe (stored, or spilled), so the service answers only then. The writer
cannot die: every exception is caught, logged and counted (:class:`StoreStats`, shown in
/metrics). A transient database error is retried, then the rows go to the spill file
(``serving/unstored_predictions.jsonl``) and the database is left alone for a few seconds; a
row the database refuses for good (a NUL character in PostgreSQL) is spilled alone, not its
batch-mates. If the spill file cannot be written either, rows go to a bounded in-memory
buffer (oldest dropped, and counted) that later writes retry. :meth:`ServingStore.log_predictions`
never blocks: a full queue goes straight to the spill path. :meth:`ServingStore.close` returns
in bounded time, spilling what a hung database still holds.
"""

from __future__ import annotations

import collections
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import sqlalchemy as sa

from lmchain.home import Home

log = logging.getLogger("lmchain.serve")

META = sa.MetaData()
PREDICTIONS = sa.Table(
    "predictions",
    META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(64), nullable=False, index=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("version", sa.String(32), nullable=False),
    sa.Column("variant", sa.String(32), nullable=False),
    sa.Column("text_sha256", sa.String(64), nullable=False),
    sa.Column("text", sa.Text, nullable=True),
    sa.Column("label", sa.String(200), nullable=False),
    sa.Column("score", sa.Float, nullable=False),
)
FEEDBACK = sa.Table(
    "feedback",
    META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("feedback_id", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("request_id", sa.String(64), nullable=True, index=True),
    sa.Column("position", sa.Integer, nullable=False, server_default="0"),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("text_sha256", sa.String(64), nullable=False),
    sa.Column("predicted_label", sa.String(200), nullable=False),
    sa.Column("correct_label", sa.String(200), nullable=False),
    sa.Column("comment", sa.Text, nullable=True),
    sa.Column("model", sa.String(200), nullable=True),
    sa.Column("version", sa.String(32), nullable=True),
)
ONE_FEEDBACK_PER_PREDICTION = sa.Index(
    "ux_feedback_prediction", FEEDBACK.c.request_id, FEEDBACK.c.position, unique=True
)

# Errors worth a retry: the database is locked, restarting or unreachable.
TRANSIENT = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)
STORED, SPILLED, BUFFERED = "stored", "spilled", "buffered"


class DuplicateFeedback(Exception):
    """This prediction already has its feedback."""


def default_url(home: Home | Path) -> str:
    return Home.of(home).store_url


def _engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(conn, _record):
            # WAL lets readers (exports, tests) run while the service writes.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def _upgrade(engine: sa.Engine) -> None:
    """Stores made before feedback named its prediction: add the position and the unique index."""

    def has_position() -> bool:
        return "position" in {c["name"] for c in sa.inspect(engine).get_columns("feedback")}

    if not has_position():
        try:
            with engine.begin() as conn:
                conn.execute(sa.text("ALTER TABLE feedback ADD COLUMN position INTEGER NOT NULL DEFAULT 0"))
        except sa.exc.DBAPIError:
            if not has_position():  # else another process upgraded it first
                raise
    try:
        ONE_FEEDBACK_PER_PREDICTION.create(engine, checkfirst=True)
    except sa.exc.IntegrityError:
        log.error(
            "the feedback table holds several records for one prediction (from before feedback was "
            "tied to predictions); the service still refuses a second one, but two racing posts could "
            "both land until the duplicates are removed"
        )


@dataclass
class StoreStats:
    """Counters the service exports in /metrics (plain ints: read under the GIL at scrape time)."""

    write_errors: int = 0  # database writes that failed (each failed attempt, retries included)
    unstored_rows: int = 0  # predictions the database did not take, spilled or buffered instead
    spilled_rows: int = 0
    spill_errors: int = 0
    buffered_rows: int = 0
    dropped_rows: int = 0  # pushed out of the full in-memory buffer: lost
    queue_full: int = 0  # requests that found the writer's queue full
    writer_errors: int = 0  # unexpected exceptions caught in the writer loop


@dataclass
class _Job:
    rows: list[dict[str, Any]]
    on_done: Callable[[str], object] | None = None  # its return value is ignored
    settled: bool = field(default=False)


class ServingStore:
    def __init__(
        self,
        url: str,
        queue_size: int = 10_000,
        spill_path: Path | str | None = None,
        *,
        buffer_rows: int = 10_000,
        recent_rows: int = 10_000,
        retry_delays: tuple[float, ...] = (0.1, 0.3, 1.0),
        pause_after_failure_s: float = 5.0,
    ):
        self.url = url
        # Without one given: the environment's home's (lmchain's callers give their home's).
        self.spill_path = Path(spill_path) if spill_path else Home.from_env().spill_file
        self.engine = _engine(url)
        META.create_all(self.engine)
        _upgrade(self.engine)
        self.stats = StoreStats()
        self._stats_lock = threading.Lock()
        self.retry_delays = retry_delays
        self.pause_after_failure_s = pause_after_failure_s
        self._db_resting_until = 0.0
        self._queue: queue.Queue[_Job] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._inflight: list[_Job] = []
        self._spill_lock = threading.Lock()
        self._buffer: collections.deque[dict[str, Any]] = collections.deque()
        self._buffer_rows = buffer_rows
        self._recent: collections.OrderedDict[str, dict[int, dict[str, Any]]] = collections.OrderedDict()
        self._recent_rows, self._recent_count = recent_rows, 0
        self._recent_lock = threading.Lock()
        self._writer = threading.Thread(target=self._write_loop, name="lmchain-store-writer", daemon=True)
        self._writer.start()

    # -- predictions: queued, written in batches by one thread
    def log_predictions(self, rows: list[dict[str, Any]], on_done: Callable[[str], object] | None = None) -> None:
        """Queue rows without ever blocking; ``on_done(outcome)`` runs once they are stored or kept."""
        self._remember(rows)
        job = _Job(list(rows), on_done)
        try:
            self._queue.put_nowait(job)
        except queue.Full:  # the writer is far behind (a hung database): keep the rows now
            self._count("queue_full")
            self._settle(job, stored=False)

    def _write_loop(self) -> None:
        while True:
            jobs: list[_Job] = []
            try:
                jobs = self._take()
                if not jobs:
                    if self._stop.is_set():
                        return
                    continue
                self._inflight = jobs
                self._write(jobs)
            except Exception:  # the last line of defence: this thread must outlive any error
                self._count("writer_errors")
                log.exception("prediction writer: unexpected error; keeping the batch in %s", self.spill_path)
                for job in jobs:
                    self._settle(job, stored=False)
            finally:
                self._inflight = []
                for _ in jobs:
                    self._queue.task_done()

    def _take(self) -> list[_Job]:
        """The next jobs (up to ~5000 rows, one transaction); [] after a short idle wait."""
        try:
            jobs = [self._queue.get(timeout=0.1)]
        except queue.Empty:
            return []
        size = len(jobs[0].rows)
        while size < 5000:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            jobs.append(job)
            size += len(job.rows)
        return jobs

    def _write(self, jobs: list[_Job]) -> None:
        if time.monotonic() < self._db_resting_until:  # it just failed: do not make every request wait on it
            for job in jobs:
                self._settle(job, stored=False)
            return
        error = self._insert([row for job in jobs for row in job.rows], retry=True)
        if error is None:
            for job in jobs:
                self._settle(job, stored=True)
            self._retry_buffer()
            return
        if isinstance(error, TRANSIENT):
            self._db_resting_until = time.monotonic() + self.pause_after_failure_s
            log.error(
                "could not store %d predictions (%s); kept them in %s",
                sum(len(j.rows) for j in jobs),
                _short(error),
                self.spill_path,
            )
            for job in jobs:
                self._settle(job, stored=False)
            return
        # Refused for good (bad data): find the culprits, one request at a time; the rest is stored.
        for job in jobs:
            if len(jobs) > 1 and self._insert(job.rows, retry=False) is None:
                self._settle(job, stored=True)
                continue
            log.error(
                "the database refused %d predictions (%s); kept them in %s",
                len(job.rows),
                _short(error),
                self.spill_path,
            )
            self._settle(job, stored=False)

    def _insert(self, rows: list[dict[str, Any]], retry: bool) -> Exception | None:
        delays = self.retry_delays if retry else ()
        for attempt in range(len(delays) + 1):
            try:
                with self.engine.begin() as conn:
                    conn.execute(PREDICTIONS.insert(), rows)
                return None
            except Exception as exc:
                self._count("write_errors")
                if not isinstance(exc, TRANSIENT) or attempt == len(delays) or self._stop.is_set():
                    return exc
                self._stop.wait(delays[attempt])  # close() cuts the back-off short
        return None

    def _settle(self, job: _Job, stored: bool) -> None:
        """Once per job: keep its rows unless stored, then tell the waiting request. close() may
        settle a job the hung writer still holds; whatever the writer learns later changes nothing."""
        with self._stats_lock:
            if job.settled:
                return
            job.settled = True
        outcome = STORED if stored else self._keep(job.rows)
        if job.on_done is not None:
            try:
                job.on_done(outcome)
            except Exception:  # e.g. the event loop is already closed at shutdown
                log.debug("prediction writer: on_done callback failed", exc_info=True)

    # -- rows the database did not take
    def _count(self, name: str, n: int = 1) -> None:
        with self._stats_lock:  # the writer and the event loop (full queue) both count
            setattr(self.stats, name, getattr(self.stats, name) + n)

    def _keep(self, rows: list[dict[str, Any]]) -> str:
        """Spill ``rows`` to the JSONL file; if that fails too, hold them in the bounded buffer."""
        self._count("unstored_rows", len(rows))
        try:
            self._spill(rows)
            self._count("spilled_rows", len(rows))
            return SPILLED
        except Exception as exc:
            self._count("spill_errors")
            log.error(
                "could not spill %d predictions to %s (%s); holding them in memory",
                len(rows),
                self.spill_path,
                _short(exc),
            )
        with self._spill_lock:
            for row in rows:
                if len(self._buffer) >= self._buffer_rows:
                    self._buffer.popleft()
                    self._count("dropped_rows")
                self._buffer.append(row)
        self._count("buffered_rows", len(rows))
        return BUFFERED

    def _spill(self, rows: list[dict[str, Any]]) -> None:
        # ASCII JSON: any text (a NUL, a stray surrogate) round-trips, and no write fails on encoding.
        data = "".join(json.dumps(row) + "\n" for row in rows).encode("ascii")
        with self._spill_lock:
            self.spill_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.spill_path, "ab") as fh:
                start = fh.tell()
                try:
                    fh.write(data)
                    fh.flush()
                except BaseException:
                    fh.truncate(start)  # no half line (a full disk) for the next append to extend
                    raise

    def _retry_buffer(self) -> None:
        """The database works again: write what the buffer holds."""
        with self._spill_lock:
            held = list(self._buffer)
            self._buffer.clear()
        if held and self._insert(held, retry=False) is not None:
            with self._spill_lock:
                self._buffer.extendleft(reversed(held))
                while len(self._buffer) > self._buffer_rows:
                    self._buffer.popleft()
                    self._count("dropped_rows")

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    # -- recent predictions, for feedback that arrives before (or instead of) the database write
    def _remember(self, rows: list[dict[str, Any]]) -> None:
        with self._recent_lock:
            for row in rows:
                self._recent.setdefault(row["request_id"], {})[row["position"]] = row
                self._recent_count += 1
            while self._recent_count > self._recent_rows and len(self._recent) > 1:
                _, old = self._recent.popitem(last=False)
                self._recent_count -= len(old)

    def lookup(self, request_id: str) -> dict[int, dict[str, Any]]:
        """The predictions of one request by position: from memory, else from the database."""
        with self._recent_lock:
            rows = self._recent.get(request_id)
            if rows is not None:
                return dict(rows)
        return {r["position"]: r for r in self.prediction(request_id)}

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every queued prediction is written; False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)
        return not self._queue.unfinished_tasks

    def close(self, timeout: float = 60.0) -> bool:
        """Drain the queue, then stop. Returns within about ``timeout`` + 1 s even when the
        database hangs: what the writer could not write by then is spilled. False if that happened."""
        self.flush(timeout)
        self._stop.set()
        self._writer.join(timeout=1.0)
        clean = not self._writer.is_alive()
        if not clean:
            left = [job for job in self._inflight if not job.settled]
            while True:
                try:
                    left.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            rows = [row for job in left for row in job.rows]
            log.error(
                "prediction writer still busy at shutdown (database hung?): %d predictions kept in %s",
                len(rows),
                self.spill_path,
            )
            for job in left:
                self._settle(job, stored=False)
        if self._buffer:
            with self._spill_lock:
                held = list(self._buffer)
            try:
                self._spill(held)
                with self._spill_lock:
                    self._buffer.clear()
            except Exception as exc:
                log.error("%d predictions held in memory are lost at shutdown (%s)", len(held), _short(exc))
        if clean:
            self.engine.dispose()
        return clean

    # -- feedback: written synchronously
    def add_feedback(self, record: dict[str, Any]) -> None:
        """Raises DuplicateFeedback when the prediction already has feedback."""
        try:
            with self.engine.begin() as conn:
                conn.execute(FEEDBACK.insert(), [record])
        except sa.exc.IntegrityError as exc:
            if record.get("request_id") is not None and self.feedback_for(
                record["request_id"], record.get("position", 0)
            ):
                raise DuplicateFeedback(record["request_id"]) from None
            raise exc

    def feedback_for(self, request_id: str, position: int) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(FEEDBACK).where(FEEDBACK.c.request_id == request_id, FEEDBACK.c.position == position)
            ).first()
            return dict(row._mapping) if row else None

    def prediction(self, request_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(PREDICTIONS).where(PREDICTIONS.c.request_id == request_id).order_by(PREDICTIONS.c.position)
            )
            return [dict(r._mapping) for r in rows]

    def count(self, table: str) -> int:
        t = {"predictions": PREDICTIONS, "feedback": FEEDBACK}[table]
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()

    def feedback_since(self, after_id: int = 0) -> list[dict[str, Any]]:
        """Feedback records with id > after_id, oldest first (the feedback loop's export)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(FEEDBACK).where(FEEDBACK.c.id > after_id).order_by(FEEDBACK.c.id))
            return [dict(r._mapping) for r in rows]


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return text[:300]
