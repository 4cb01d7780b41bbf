"""The service is closed by default and refuses bad requests cheaply (issue 18): start-up on an
exposed host, admin keys, body limits, strict JSON, 422s without echoes, the Host allow-list,
rate limits, and overload (503, disconnected clients, /healthz under a flood) on real servers."""

import asyncio
import json
import socket
import statistics
import subprocess
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from serve_support import make_tiny_classifier, metric, running_server, serve_process

from lmchain.config import ServeConfig
from lmchain.errors import ConfigError
from lmchain.serve.app import create_app
from lmchain.serve.auth import new_key

LOCAL = "http://localhost"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_classifier(tmp_path_factory.mktemp("tiny-safety"))


def _app(tiny_dir, tmp_path, **settings):
    return create_app(settings=ServeConfig(store_url=f"sqlite:///{tmp_path / 'store.db'}", **settings),
                      model_dir=tiny_dir)


def _ready(client: TestClient) -> None:
    for _ in range(300):
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.1)
    raise AssertionError("service never became ready")


# --------------------------------------------------------------------------- closed by default


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "serve.example.com"])
def test_an_open_service_refuses_to_start_on_a_reachable_host(tiny_dir, tmp_path, host):
    with pytest.raises(ConfigError, match=r"refusing to serve on .* without API keys.*--new-api-key.*--insecure-open"):
        _app(tiny_dir, tmp_path, host=host)


def test_loopback_keys_or_insecure_open_let_it_start(tiny_dir, tmp_path, monkeypatch):
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        _app(tiny_dir, tmp_path, host=host).state.store.close()
    _app(tiny_dir, tmp_path, host="0.0.0.0", insecure_open=True).state.store.close()
    monkeypatch.setenv("LMCHAIN_API_KEY_HASHES", new_key()[1])
    _app(tiny_dir, tmp_path, host="0.0.0.0").state.store.close()


def test_lmchain_serve_exits_with_the_reason_instead_of_listening_open(tiny_dir, tmp_path):
    from conftest import REPO, lmchain_cmd, subprocess_env

    run = subprocess.run(lmchain_cmd("serve", "--host", "0.0.0.0", "--port", "0", "--model-dir", str(tiny_dir)),
                         cwd=REPO, env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "refusing to serve on 0.0.0.0 without API keys" in run.stderr and "Traceback" not in run.stderr
    assert "lmchain serve --new-api-key" in run.stderr and "--insecure-open" in run.stderr


def test_admin_routes_take_only_admin_keys(tiny_dir, tmp_path, monkeypatch):
    key, key_line = new_key()
    admin, admin_line = new_key()
    monkeypatch.setenv("LMCHAIN_API_KEY_HASHES", key_line)
    with TestClient(_app(tiny_dir, tmp_path), base_url=LOCAL) as client:  # no admin key configured
        _ready(client)
        off = client.post("/v1/admin/reload", headers={"X-API-Key": key})
        assert off.status_code == 403 and "no admin key is configured" in off.text
    (tmp_path / "admin").write_text(admin_line + "\n")
    with TestClient(_app(tiny_dir, tmp_path, admin_keys_file=str(tmp_path / "admin")), base_url=LOCAL) as client:
        _ready(client)
        assert client.post("/v1/admin/reload").status_code == 401
        assert client.post("/v1/admin/reload", headers={"X-API-Key": "lmk_guess"}).status_code == 401
        predict_key = client.post("/v1/admin/reload", headers={"X-API-Key": key})
        assert predict_key.status_code == 403 and "may not use admin routes" in predict_key.text
        assert client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {admin}"}).status_code == 200
        # ... and the admin key is not a predict key.
        assert client.post("/v1/predict", json={"texts": ["x"]}, headers={"X-API-Key": admin}).status_code == 401
        assert client.post("/v1/predict", json={"texts": ["x"]}, headers={"X-API-Key": key}).status_code == 200


# --------------------------------------------------------------------------- bodies, JSON, Host


@pytest.fixture(scope="module")
def server(tiny_dir, tmp_path_factory):
    """An in-process uvicorn server on 127.0.0.1: (base URL, port)."""
    folder = tmp_path_factory.mktemp("safety-server")
    app = create_app(settings=ServeConfig(store_url=f"sqlite:///{folder / 'store.db'}", max_chars_per_text=100,
                                          allowed_hosts=["localhost", "api.example.com", "*.corp.example"]),
                     model_dir=tiny_dir)
    with running_server(app) as base:
        yield base, int(base.rsplit(":", 1)[1])


def _response_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_a_body_over_the_limit_gets_413_before_it_is_read(server):
    _, port = server
    # Content-Length says 20 MiB, and not a byte of it is sent: the answer must not wait for it.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 20971520\r\n\r\n")
        head = _response_head(sock)
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    assert b"max_body_bytes" in head and b"connection: close" in head.lower()
    # Chunked, no Content-Length: cut off once the count passes 1 MiB (the last chunk never comes).
    chunk = b'{"texts": ["' + b"a" * (256 * 1024) + b'"]}'
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        for _ in range(5):  # 5 x 256 KiB > 1 MiB
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        head = _response_head(sock)
    assert head.startswith(b"HTTP/1.1 413"), head[:200]


def test_a_422_never_echoes_the_input(server):
    base, _ = server
    secret = "my card is 4111 1111 1111 1111 " * 25_000  # 0.8 MB in one text: over max_chars_per_text
    r = httpx.post(base + "/v1/predict", json={"texts": [secret]}, timeout=30)
    assert r.status_code == 422 and "at most 100 characters" in r.text
    assert "4111" not in r.text and len(r.content) < 1000 and "input" not in r.json()["detail"][0]
    many = httpx.post(base + "/v1/predict", json={"texts": [{"x": "4111"}] * 50_000}, timeout=30)
    assert many.status_code == 422 and "4111" not in many.text and len(many.content) < 5000
    each_bad = httpx.post(base + "/v1/predict", json={"texts": [4111] * 64}, timeout=30).json()
    assert len(each_bad["detail"]) == 20 and each_bad["more_errors"] == 44  # 64 errors, 20 shown
    fb = httpx.post(base + "/v1/feedback", json={"request_id": "r" * 500, "correct_label": "4111" * 100}, timeout=30)
    assert fb.status_code == 422 and "4111" not in fb.text and "rrrr" not in fb.text


@pytest.mark.parametrize("body, expected", [
    (b'{"texts": ["\\ud800"]}', (400, "lone UTF-16 surrogate")),
    (b'{"texts": ["ok \\udfff and more"]}', (400, "lone UTF-16 surrogate")),
    (b'{"texts": NaN}', (400, "NaN is not valid JSON")),
    (b'{"texts": ["a"], "x": Infinity}', (400, "Infinity is not valid JSON")),
    (b'{"texts": [-Infinity]}', (400, "-Infinity is not valid JSON")),
    (b'{"texts": ["caf\xe9"]}', (400, "not valid UTF-8")),
    (b'\xef\xbb\xbf{"texts": ["bom"]}', (422, "JSON decode error")),
    (b'{"texts": ["a"', (422, "JSON decode error")),
    (b"[" * 100_000 + b"]" * 100_000, (400, "nested too deeply")),
])
def test_malformed_json_gets_a_clear_4xx_never_a_500(server, body, expected):
    base, _ = server
    for route in ("/v1/predict", "/v1/feedback"):
        r = httpx.post(base + route, content=body, headers={"content-type": "application/json"}, timeout=30)
        assert (r.status_code, expected[1] in r.text) == (expected[0], True), (route, r.status_code, r.text[:300])
    # The valid twin goes through: a surrogate pair is one real character.
    ok = httpx.post(base + "/v1/predict", content=b'{"texts": ["\\ud83d\\ude00"]}',
                    headers={"content-type": "application/json"}, timeout=30)
    assert ok.status_code == 200


def test_the_host_allow_list(server):
    base, port = server
    for host in ("localhost", f"localhost:{port}", "api.example.com", "a.corp.example", "127.0.0.1", "[::1]:80"):
        assert httpx.get(base + "/healthz", headers={"host": host}).status_code == 200, host
    for host in ("evil.example", "corp.example.evil", "api.example.com.evil", "localhost.evil.example"):
        r = httpx.post(base + "/v1/predict", json={"texts": ["x"]}, headers={"host": host})
        assert r.status_code == 400 and "allowed_hosts" in r.text, host


def test_rate_limits_per_key_answer_429_with_retry_after(tiny_dir, tmp_path, monkeypatch):
    a, a_line = new_key()
    b, b_line = new_key()
    monkeypatch.setenv("LMCHAIN_API_KEY_HASHES", f"{a_line},{b_line}")
    app = _app(tiny_dir, tmp_path, rate_limit_per_s=0.1, rate_limit_burst=3, feedback_rate_per_s=0.1,
               feedback_burst=2)
    with TestClient(app, base_url=LOCAL) as client:
        _ready(client)
        statuses = [client.post("/v1/predict", json={"texts": ["x"]}, headers={"X-API-Key": a}).status_code
                    for _ in range(5)]
        assert statuses == [200, 200, 200, 429, 429]
        limited = client.post("/v1/predict", json={"texts": ["x"]}, headers={"X-API-Key": a})
        assert int(limited.headers["retry-after"]) >= 1 and "rate limit of 0.1 requests" in limited.text
        assert client.post("/v1/predict", json={"texts": ["x"]}, headers={"X-API-Key": b}).status_code == 200
        fb = [client.post("/v1/feedback", json={"request_id": "unknown", "correct_label": "neg"},
                          headers={"X-API-Key": b}).status_code for _ in range(3)]
        assert fb == [404, 404, 429]
        metrics = client.get("/metrics").text
    assert 'lmchain_rate_limited_total{route="/v1/predict"} 3.0' in metrics
    assert 'lmchain_rate_limited_total{route="/v1/feedback"} 1.0' in metrics


# --------------------------------------------------------------------------- overload, on `lmchain serve`


LONG = " ".join(["a thoughtful, slow and rather long review of a film"] * 60)  # ~500 tokens


@pytest.fixture(scope="module")
def slow_service(tiny_dir, tmp_path_factory):
    """`lmchain serve` whose batches of 64 long texts take a few hundred ms, with a 640-text queue."""
    home = tmp_path_factory.mktemp("overload-home")
    sets = ["deploy.service.max_length=512", "deploy.service.max_batch_size=64", "deploy.service.max_queue_texts=640",
            "deploy.service.rate_limit_per_s=0", "deploy.service.max_wait_ms=0"]
    with serve_process(home, "--model-dir", str(tiny_dir), *[a for kv in sets for a in ("--set", kv)]) as (base, _):
        yield base, int(base.rsplit(":", 1)[1])


def _request(port: int, texts: list[str]) -> bytes:
    body = json.dumps({"texts": texts}).encode()
    return (b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (port, len(body), body))


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    await reader.readexactly(int(headers.get("content-length", 0)))
    return int(lines[0].split()[1]), headers


async def _flood(port: int, connections: int, seconds: float) -> list[tuple[int, dict[str, str]]]:
    request = _request(port, [LONG] * 64)
    end = time.monotonic() + seconds
    answers: list[tuple[int, dict[str, str]]] = []

    async def client():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.monotonic() < end:
                writer.write(request)
                answers.append(await _read_response(reader))
        finally:
            writer.close()

    await asyncio.gather(*[client() for _ in range(connections)])
    return answers


def test_a_full_queue_answers_503_at_once_and_healthz_stays_fast(slow_service):
    base, port = slow_service
    probes: list[float] = []
    stop = threading.Event()

    def probe():
        with httpx.Client(base_url=base, timeout=30) as http:
            while not stop.is_set():
                t0 = time.perf_counter()
                assert http.get("/healthz").status_code == 200
                probes.append(time.perf_counter() - t0)
                time.sleep(0.02)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        answers = asyncio.run(_flood(port, connections=48, seconds=4.0))
    finally:
        stop.set()
        prober.join()
    statuses = [status for status, _ in answers]
    assert set(statuses) <= {200, 503}, set(statuses)
    assert statuses.count(200) >= 2 and statuses.count(503) >= 20, (statuses.count(200), statuses.count(503))
    assert all(h.get("retry-after") == "1" for status, h in answers if status == 503)
    p99 = statistics.quantiles(probes, n=100)[98] if len(probes) >= 20 else max(probes)
    assert len(probes) >= 20 and p99 < 1.0, f"/healthz p99 {p99:.3f}s over {len(probes)} probes during the flood"
    assert metric(httpx.get(base + "/metrics").text, "lmchain_overloaded_total") == statuses.count(503)


def test_no_model_time_goes_to_clients_that_left(slow_service):
    base, port = slow_service
    before = httpx.get(base + "/metrics").text

    async def scenario():
        stayers = [await asyncio.open_connection("127.0.0.1", port) for _ in range(8)]
        leavers = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        for _, writer in stayers:  # 8 x 64 long texts: seconds of model work, one batch after another
            writer.write(_request(port, [LONG] * 64))
            await writer.drain()
            await asyncio.sleep(0.01)
        for _, writer in leavers:  # queued behind them ...
            writer.write(_request(port, [LONG] * 64))
            await writer.drain()
        await asyncio.sleep(0.5)
        for _, writer in leavers:  # ... and gone long before their turn
            writer.close()
        answers = [await _read_response(reader) for reader, _ in stayers]
        for _, writer in stayers:
            writer.close()
        return answers

    answers = asyncio.run(scenario())
    assert [status for status, _ in answers] == [200] * 8
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = httpx.get(base + "/metrics").text
        if metric(after, "lmchain_disconnected_total") - metric(before, "lmchain_disconnected_total") >= 3:
            break
        time.sleep(0.1)

    def delta(name):
        return metric(after, name) - metric(before, name)

    assert delta("lmchain_skipped_texts_total") == 3 * 64
    assert delta("lmchain_predicted_texts_total") == 8 * 64  # the model ran the stayers' texts only
    assert delta("lmchain_disconnected_total") == 3
