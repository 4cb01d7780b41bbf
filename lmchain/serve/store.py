"""Durable store of predictions and feedback: SQLite by default, PostgreSQL when configured.

Feedback is written before the API answers, so a 200 means the record is on disk. Predictions
are queued to one writer thread that inserts them in batches, so that the model's hot path does
not wait on the database; the queue is bounded and blocks when full (back-pressure, never a
silent drop), closing the store drains it, and rows the database refuses after retries are
appended to ``serving/unstored_predictions.jsonl``.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

log = logging.getLogger("lmchain.serve")

META = sa.MetaData()
PREDICTIONS = sa.Table(
    "predictions", META,
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
    "feedback", META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("feedback_id", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("request_id", sa.String(64), nullable=True, index=True),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("text_sha256", sa.String(64), nullable=False),
    sa.Column("predicted_label", sa.String(200), nullable=False),
    sa.Column("correct_label", sa.String(200), nullable=False),
    sa.Column("comment", sa.Text, nullable=True),
    sa.Column("model", sa.String(200), nullable=True),
    sa.Column("version", sa.String(32), nullable=True),
)


def default_url(home: Path) -> str:
    return f"sqlite:///{home / 'serving' / 'store.db'}"


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


class ServingStore:
    def __init__(self, url: str, queue_size: int = 100_000, spill_path: Path | None = None):
        from lmchain.artifacts import home

        self.url = url
        self.spill_path = spill_path or home() / "serving" / "unstored_predictions.jsonl"
        self.engine = _engine(url)
        META.create_all(self.engine)
        self._queue: queue.Queue[list[dict[str, Any]] | None] = queue.Queue(maxsize=queue_size)
        self._writer = threading.Thread(target=self._write_loop, name="lmchain-store-writer", daemon=True)
        self._writer.start()
        self.write_errors = 0

    # -- predictions: queued, written in batches by one thread
    def log_predictions(self, rows: list[dict[str, Any]]) -> None:
        self._queue.put(rows)  # blocks when the writer falls far behind

    def _write_loop(self) -> None:
        stop = False
        while not stop:
            batch = self._queue.get()
            taken = 1
            if batch is None:
                self._queue.task_done()
                break
            rows = list(batch)
            # Drain what else is waiting: one transaction for many requests.
            while len(rows) < 5000:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                taken += 1
                if more is None:
                    stop = True
                    break
                rows.extend(more)
            if rows:
                self._insert(rows)
            for _ in range(taken):
                self._queue.task_done()

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        for attempt in range(5):
            try:
                with self.engine.begin() as conn:
                    conn.execute(PREDICTIONS.insert(), rows)
                return
            except sa.exc.OperationalError as exc:  # locked or unreachable: retry, then report
                if attempt == 4:
                    self.write_errors += len(rows)
                    self._spill(rows)
                    log.error("could not store %d predictions (%s); kept them in %s", len(rows), exc,
                              self.spill_path)
                    return
                time.sleep(0.2 * 2 ** attempt)

    def _spill(self, rows: list[dict[str, Any]]) -> None:
        """The database stayed unreachable: append the rows to a JSONL file instead of losing them."""
        self.spill_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.spill_path, "a", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every queued prediction is written; False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)
        return not self._queue.unfinished_tasks

    def close(self) -> None:
        self._queue.put(None)
        self._writer.join(timeout=60)
        self.engine.dispose()

    # -- feedback: written synchronously
    def add_feedback(self, record: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(FEEDBACK.insert(), [record])

    def prediction(self, request_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(PREDICTIONS).where(PREDICTIONS.c.request_id == request_id)
                                .order_by(PREDICTIONS.c.position))
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
