"""/v1/feedback names a prediction the service made, and takes the text and the predicted label
from it; one feedback per prediction (409 after), also under racing posts (issue 18)."""

import concurrent.futures as cf
import time

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from serve_support import make_tiny_classifier, postgres_admin_url, running_server, throwaway_postgres

from lmchain.artifacts import sha256_text
from lmchain.config import ServeConfig
from lmchain.serve.app import create_app
from lmchain.serve.store import FEEDBACK, DuplicateFeedback, ServingStore

LOCAL = "http://localhost"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_classifier(tmp_path_factory.mktemp("tiny-feedback"))


def _client(tiny_dir, store_url: str, **settings) -> TestClient:
    app = create_app(settings=ServeConfig(store_url=store_url, **settings), model_dir=tiny_dir)
    return TestClient(app, base_url=LOCAL)


def _ready(client) -> None:
    for _ in range(300):
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.1)
    raise AssertionError("service never became ready")


def test_feedback_must_name_a_prediction_and_takes_its_text_and_label(tiny_dir, tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with _client(tiny_dir, url) as client:
        _ready(client)
        answer = client.post("/v1/predict", json={"texts": ["a fine film", "a dull film"]}).json()
        rid, said = answer["request_id"], [p["label"] for p in answer["predictions"]]
        other = {"neg": "pos", "pos": "neg"}

        unknown = client.post("/v1/feedback", json={"request_id": "f" * 32, "correct_label": "neg"})
        assert unknown.status_code == 404 and "request_id that /v1/predict returned" in unknown.text
        beyond = client.post("/v1/feedback", json={"request_id": rid, "position": 2, "correct_label": "neg"})
        assert beyond.status_code == 404 and "positions 0 to 1" in beyond.text
        forged_label = client.post("/v1/feedback", json={"request_id": rid, "position": 1, "correct_label": "neg",
                                                         "predicted_label": other[said[1]]})
        assert forged_label.status_code == 422 and "disagrees with the service's answer" in forged_label.text
        forged_text = client.post("/v1/feedback", json={"request_id": rid, "position": 1, "correct_label": "neg",
                                                        "text": "<img src=x onerror=alert(1)> mail me a@b.c"})
        assert forged_text.status_code == 422 and "differs from the text of this prediction" in forged_text.text
        assert "onerror" not in forged_text.text

        ok = client.post("/v1/feedback", json={"request_id": rid, "position": 1, "correct_label": "neg",
                                               "text": "a dull film", "predicted_label": said[1]})
        assert ok.status_code == 200 and ok.json()["predicted_label"] == said[1]
        again = client.post("/v1/feedback", json={"request_id": rid, "position": 1, "correct_label": "pos"})
        assert again.status_code == 409 and "never replaced" in again.text
        assert client.post("/v1/feedback", json={"request_id": rid, "correct_label": "pos"}).status_code == 200
    store = ServingStore(url)
    rows = {r["position"]: r for r in store.feedback_since(0)}
    store.close()
    assert set(rows) == {0, 1} and rows[1]["text"] == "a dull film" and rows[1]["correct_label"] == "neg"
    assert rows[0]["text"] == "a fine film" and rows[0]["predicted_label"] == said[0]
    assert rows[1]["text_sha256"] == sha256_text("a dull film") and rows[1]["version"] == "local"


def test_without_stored_texts_feedback_sends_the_text_and_its_hash_is_checked(tiny_dir, tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with _client(tiny_dir, url, store_texts=False) as client:
        _ready(client)
        rid = client.post("/v1/predict", json={"texts": ["kept out of the store"]}).json()["request_id"]
        missing = client.post("/v1/feedback", json={"request_id": rid, "correct_label": "pos"})
        assert missing.status_code == 422 and "store_texts is off" in missing.text
        wrong = client.post("/v1/feedback", json={"request_id": rid, "correct_label": "pos", "text": "another text"})
        assert wrong.status_code == 422 and "SHA-256 differs" in wrong.text
        ok = client.post("/v1/feedback", json={"request_id": rid, "correct_label": "pos",
                                               "text": "kept out of the store"})
        assert ok.status_code == 200
    store = ServingStore(url)
    assert [r["text"] for r in store.prediction(rid)] == [None]
    assert [r["text"] for r in store.feedback_since(0)] == ["kept out of the store"]
    store.close()


def test_twenty_racing_identical_posts_store_one_row(tiny_dir, tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    app = create_app(settings=ServeConfig(store_url=url), model_dir=tiny_dir)
    with running_server(app) as base:
        rid = httpx.post(base + "/v1/predict", json={"texts": ["same text"]}).json()["request_id"]
        post = {"request_id": rid, "correct_label": "pos", "comment": "same post"}
        with cf.ThreadPoolExecutor(20) as pool:
            statuses = sorted(pool.map(lambda _: httpx.post(base + "/v1/feedback", json=post, timeout=30).status_code,
                                       range(20)))
    assert statuses == [200] + [409] * 19
    store = ServingStore(url)
    assert store.count("feedback") == 1
    store.close()


def test_the_database_refuses_a_second_feedback_for_one_prediction(tmp_path):
    """The unique index, not only the route, holds the line: a direct insert fails too."""
    store = ServingStore(f"sqlite:///{tmp_path / 'store.db'}")
    record = {"feedback_id": "a", "created_at": 1.0, "request_id": "r1", "position": 0, "text": "t",
              "text_sha256": "0" * 64, "predicted_label": "pos", "correct_label": "neg"}
    store.add_feedback(record)
    with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as conn:
        conn.execute(FEEDBACK.insert(), [{**record, "feedback_id": "b"}])
    store.close()


def test_an_old_store_gets_the_position_column_and_the_unique_index(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # the feedback table as main created it
        conn.execute(sa.text("CREATE TABLE feedback (id INTEGER PRIMARY KEY, feedback_id VARCHAR(64) UNIQUE NOT "
                             "NULL, created_at FLOAT NOT NULL, request_id VARCHAR(64), text TEXT NOT NULL, "
                             "text_sha256 VARCHAR(64) NOT NULL, predicted_label VARCHAR(200) NOT NULL, "
                             "correct_label VARCHAR(200) NOT NULL, comment TEXT, model VARCHAR(200), "
                             "version VARCHAR(32))"))
        conn.execute(sa.text("INSERT INTO feedback (feedback_id, created_at, request_id, text, text_sha256, "
                             "predicted_label, correct_label) VALUES ('old', 1, 'r0', 't', 'h', 'pos', 'neg')"))
    engine.dispose()
    store = ServingStore(url)
    (old,) = store.feedback_since(0)
    assert old["position"] == 0
    record = {"feedback_id": "new", "created_at": 2.0, "request_id": "r0", "position": 0, "text": "t",
              "text_sha256": "h", "predicted_label": "pos", "correct_label": "pos"}
    with pytest.raises(DuplicateFeedback):
        store.add_feedback(record)
    store.close()


@pytest.mark.skipif(postgres_admin_url() is None, reason="PostgreSQL not reachable on 127.0.0.1:5432")
def test_feedback_right_after_predict_finds_it_while_the_database_lags(tiny_dir, tmp_path):
    """The predictions table is locked (the writer hangs): feedback still finds its prediction,
    from the service's memory, and the feedback itself is stored."""
    with throwaway_postgres() as url:
        with _client(tiny_dir, url, store_wait_s=0, spill_path=str(tmp_path / "spill.jsonl"),
                     shutdown_timeout_s=2) as client:
            _ready(client)
            locker = sa.create_engine(url).connect()
            tx = locker.begin()
            locker.execute(sa.text("LOCK TABLE predictions IN ACCESS EXCLUSIVE MODE"))
            try:
                answer = client.post("/v1/predict", json={"texts": ["late to the database"]})
                assert answer.status_code == 200
                fb = client.post("/v1/feedback", json={"request_id": answer.json()["request_id"],
                                                       "correct_label": "pos"})
                assert fb.status_code == 200, fb.text
                assert client.app.state.store.count("feedback") == 1
            finally:
                tx.rollback()
                locker.close()
