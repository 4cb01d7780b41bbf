"""The prediction writer cannot die and never blocks the service; shutdown is bounded; a kill -9
under load loses no answered prediction or feedback (issue 18). Real failures only: a NUL byte
through PostgreSQL, a spill path under a regular file, a table locked by another session."""

import concurrent.futures as cf
import json
import os
import signal
import threading
import time

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from serve_support import (make_tiny_classifier, metric, postgres_admin_url, running_server, serve_process,
                           throwaway_postgres)

from lmchain.config import ServeConfig
from lmchain.serve.app import create_app
from lmchain.serve.store import META, ServingStore

LOCAL = "http://localhost"
needs_postgres = pytest.mark.skipif(postgres_admin_url() is None, reason="PostgreSQL not reachable on 127.0.0.1:5432")
# A regular file cannot hold a folder, not even for root: every write under it fails for real.
UNWRITABLE = "/dev/null/lmchain/unstored_predictions.jsonl"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_classifier(tmp_path_factory.mktemp("tiny-store"))


def _row(request_id: str, position: int = 0, text: str = "t") -> dict:
    return {"request_id": request_id, "position": position, "created_at": time.time(), "model": "m", "version": "1",
            "variant": "fp32", "text_sha256": "0" * 64, "text": text, "label": "pos", "score": 0.9}


def _spilled(path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8")] if os.path.exists(path) else []


@needs_postgres
def test_a_nul_byte_through_postgresql_is_spilled_and_the_writer_lives_on(tiny_dir, tmp_path):
    spill = tmp_path / "spill.jsonl"
    with throwaway_postgres() as url:
        app = create_app(settings=ServeConfig(store_url=url, spill_path=str(spill)), model_dir=tiny_dir)
        with running_server(app) as base:
            texts = [[f"fine text {i}"] for i in range(9)] + [["bad\x00text", "its neighbour"]]
            with cf.ThreadPoolExecutor(10) as pool:  # at once: the NUL request shares a batch with others
                answers = list(pool.map(lambda t: httpx.post(base + "/v1/predict", json={"texts": t}, timeout=30),
                                        texts))
            assert [a.status_code for a in answers] == [200] * 10
            after = httpx.post(base + "/v1/predict", json={"texts": ["after the bad one"]}, timeout=30)
            assert after.status_code == 200
            nul_id = answers[-1].json()["request_id"]
            # Feedback still finds the spilled prediction (from memory); PostgreSQL refuses the NUL text
            # of position 0 -> a clear 503, never a 500; position 1 is fine.
            refused = httpx.post(base + "/v1/feedback", json={"request_id": nul_id, "correct_label": "pos"})
            assert refused.status_code == 503 and "nothing was stored" in refused.text
            ok = httpx.post(base + "/v1/feedback", json={"request_id": nul_id, "position": 1, "correct_label": "pos"})
            assert ok.status_code == 200
            assert httpx.get(base + "/healthz").status_code == 200
            metrics = httpx.get(base + "/metrics").text
        store = ServingStore(url, spill_path=tmp_path / "unused.jsonl")
        stored = {r["text"] for rid in [a.json()["request_id"] for a in answers[:-1]] + [after.json()["request_id"]]
                  for r in store.prediction(rid)}
        assert store.prediction(nul_id) == []
        store.close()
    assert stored == {f"fine text {i}" for i in range(9)} | {"after the bad one"}
    assert [r["text"] for r in _spilled(spill)] == ["bad\x00text", "its neighbour"]
    assert metric(metrics, "lmchain_store_unstored_predictions_total") == 2
    assert metric(metrics, "lmchain_store_write_errors_total") >= 1
    assert metric(metrics, "lmchain_store_writer_errors_total") == 0
    assert metric(metrics, "lmchain_feedback_store_errors_total") == 1


def test_when_the_spill_file_fails_too_rows_wait_in_a_bounded_buffer(tiny_dir, tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    app = create_app(settings=ServeConfig(store_url=url, spill_path=UNWRITABLE, spill_buffer_rows=5),
                     model_dir=tiny_dir)
    store = app.state.store
    store.retry_delays, store.pause_after_failure_s = (0.05,), 1.0
    with TestClient(app, base_url=LOCAL) as client:
        for _ in range(300):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.1)
        with store.engine.begin() as conn:  # the database now refuses every insert
            conn.execute(sa.text("drop table predictions"))
        statuses = [client.post("/v1/predict", json={"texts": [f"held {i}"]}).status_code for i in range(8)]
        assert statuses == [200] * 8 and client.get("/healthz").status_code == 200
        metrics = client.get("/metrics").text
        assert metric(metrics, "lmchain_store_spill_errors_total") >= 1
        assert metric(metrics, "lmchain_store_buffered_predictions_total") == 8
        assert metric(metrics, "lmchain_store_dropped_predictions_total") == 3  # the 3 oldest: counted, not silent
        assert metric(metrics, "lmchain_store_buffer_predictions") == 5
        META.create_all(store.engine)  # the database is back
        time.sleep(1.1)  # past the pause after a failure
        assert client.post("/v1/predict", json={"texts": ["back"]}).status_code == 200
        # The request returns once its own row is stored; the writer drains the buffer right after.
        assert store.flush(timeout=10)
        assert store.buffered == 0
    check = ServingStore(url, spill_path=tmp_path / "unused.jsonl")
    with check.engine.connect() as conn:
        texts = [r[0] for r in conn.execute(sa.text("select text from predictions order by id"))]
    check.close()
    assert sorted(texts) == sorted(["back"] + [f"held {i}" for i in range(3, 8)])


@needs_postgres
def test_log_predictions_never_blocks_and_close_is_bounded_when_the_database_hangs(tmp_path):
    spill = tmp_path / "spill.jsonl"
    with throwaway_postgres() as url:
        store = ServingStore(url, 2, spill)
        locker = sa.create_engine(url).connect()
        tx = locker.begin()
        locker.execute(sa.text("LOCK TABLE predictions IN ACCESS EXCLUSIVE MODE"))  # every insert now waits
        try:
            calls = threading.Thread(target=lambda: [store.log_predictions([_row(f"r{i}")]) for i in range(50)])
            t0 = time.monotonic()
            calls.start()
            calls.join(timeout=10)
            assert not calls.is_alive(), "log_predictions blocked on a full queue"
            assert time.monotonic() - t0 < 2.0
            assert store.stats.queue_full >= 40  # kept at once instead of waiting for the writer
            t0 = time.monotonic()
            assert store.close(timeout=1.0) is False  # the writer is stuck in its insert ...
            assert time.monotonic() - t0 < 5.0  # ... and close() returns anyway
        finally:
            tx.rollback()
            locker.close()
    # Nothing was lost: every row is in the spill file (the stuck batch too).
    assert {r["request_id"] for r in _spilled(spill)} == {f"r{i}" for i in range(50)}


@needs_postgres
def test_the_service_shuts_down_in_bounded_time_when_the_database_hangs(tiny_dir, tmp_path):
    with throwaway_postgres() as url:
        settings = ServeConfig(store_url=url, spill_path=str(tmp_path / "spill.jsonl"), store_wait_s=0.2,
                               shutdown_timeout_s=1.0)
        client = TestClient(create_app(settings=settings, model_dir=tiny_dir), base_url=LOCAL)
        client.__enter__()
        locker = sa.create_engine(url).connect()
        tx = locker.begin()
        try:
            for _ in range(300):
                if client.get("/readyz").status_code == 200:
                    break
                time.sleep(0.1)
            locker.execute(sa.text("LOCK TABLE predictions IN ACCESS EXCLUSIVE MODE"))
            answer = client.post("/v1/predict", json={"texts": ["while the database hangs"]})
            assert answer.status_code == 200  # after store_wait_s, not never
            assert metric(client.get("/metrics").text, "lmchain_store_unconfirmed_total") == 1
            t0 = time.monotonic()
            client.__exit__(None, None, None)
            assert time.monotonic() - t0 < 8.0
        finally:
            tx.rollback()
            locker.close()
    assert [r["text"] for r in _spilled(tmp_path / "spill.jsonl")] == ["while the database hangs"]


def test_kill_9_under_load_loses_no_answered_prediction_or_feedback(tiny_dir, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    url = f"sqlite:///{home / 'store.db'}"
    sets = [f"deploy.service.store_url={url}", "deploy.service.feedback_rate_per_s=0",
            "deploy.service.rate_limit_per_s=0"]
    answered: list[str] = []
    confirmed: list[str] = []
    stop = threading.Event()
    with serve_process(home, "--model-dir", str(tiny_dir), *[a for kv in sets for a in ("--set", kv)]) as (base, proc):
        def client(i):
            with httpx.Client(base_url=base, timeout=10) as http:
                n = 0
                while not stop.is_set():
                    try:
                        r = http.post("/v1/predict", json={"texts": [f"text {i} {n}", f"other {i} {n}"]})
                        if r.status_code != 200:
                            continue
                        answered.append(r.json()["request_id"])
                        f = http.post("/v1/feedback", json={"request_id": answered[-1], "position": n % 2,
                                                            "correct_label": "pos"})
                        if f.status_code == 200:
                            confirmed.append(f.json()["feedback_id"])
                    except httpx.TransportError:
                        return
                    n += 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(confirmed) < 150 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # mid-flight: requests are being answered right now
        proc.wait(timeout=30)
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert len(confirmed) >= 150
    store = ServingStore(url, spill_path=home / "unused.jsonl")
    missing = [rid for rid in answered if len(store.prediction(rid)) != 2]
    stored_feedback = {r["feedback_id"] for r in store.feedback_since(0)}
    store.close()
    assert not missing, f"{len(missing)} of {len(answered)} answered predictions lost"
    assert set(confirmed) <= stored_feedback
