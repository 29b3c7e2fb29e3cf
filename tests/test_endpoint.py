"""The read endpoint a holder serves admits its owner only, and nothing it is sent can hurt it.

A real store with a real run, served on 127.0.0.1 as a training process serves it; requests
are made with raw sockets and urllib, as a web page, another user or a broken client would.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

import cnnprov
from cnnprov import ProvStore, RunRecorder
from cnnprov.storage.advertisement import ADVERTISEMENT_FILE, read_holder
from cnnprov.storage.endpoint import IDLE_TIMEOUT_S, MAX_CONNECTIONS, MAX_REQUEST_BYTES

from helpers import cli

COUNT = "SELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o }"


@pytest.fixture
def served(tmp_path):
    """A session that serves a store with one finished run, and its advertisement."""
    path = tmp_path / "provenance"
    session = cnnprov.open_session(path)
    recorder = RunRecorder(session, name="served")
    recorder.start()
    recorder.epoch_started(0)
    recorder.log_metrics({"loss": 0.5, "epoch": 0}, step=0)
    recorder.epoch_ended(0)
    recorder.finish()
    recorder.close()
    holder = read_holder(path)
    assert holder is not None and holder.url and holder.token
    yield path, holder
    session.close(wait=True)


def ask(url: str, query: str, headers: dict[str, str] | None = None, method: str = "POST") -> tuple[int, bytes]:
    data = urllib.parse.urlencode({"query": query}).encode()
    if method == "GET":
        request = urllib.request.Request(f"{url}?{data.decode()}", headers=headers or {})
    else:
        request = urllib.request.Request(url, data=data, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def bearer(holder) -> dict[str, str]:
    return {"Authorization": f"Bearer {holder.token}"}


def test_the_owner_reads_with_the_token_of_an_advertisement_only_the_owner_can_read(served):
    path, holder = served
    assert stat.S_IMODE(os.stat(path / ADVERTISEMENT_FILE).st_mode) == 0o600
    status, body = ask(holder.url, COUNT, bearer(holder))
    assert status == 200 and int(json.loads(body)["results"]["bindings"][0]["n"]["value"]) > 10
    assert ProvStore(path).runs().column("name") == ["served"]  # cnnprov's own readers use it transparently


@pytest.mark.parametrize(
    "headers",
    [
        {},  # no token: another local user, or a web page
        {"Authorization": "Bearer not-the-token"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ],
)
def test_a_request_without_the_token_is_refused(served, headers):
    _, holder = served
    for method in ("GET", "POST"):
        status, body = ask(holder.url, COUNT, headers, method)
        assert status == 403 and b"results" not in body


def test_a_renamed_host_is_refused_so_dns_rebinding_reads_nothing(served):
    _, holder = served
    status, body = ask(holder.url, COUNT, {**bearer(holder), "Host": "attacker.example:80"})
    assert status == 403 and b"results" not in body


def test_no_cors_headers_are_sent(served):
    _, holder = served
    request = urllib.request.Request(
        holder.url,
        data=urllib.parse.urlencode({"query": COUNT}).encode(),
        headers={**bearer(holder), "Origin": "https://attacker.example"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert not [name for name in response.headers if name.lower().startswith("access-control-")]


def test_service_is_refused_so_the_process_fetches_no_url(served):
    _, holder = served
    with socket.socket() as listener:  # a port that would see the fetch, were it made
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        query = f"SELECT * WHERE {{ SERVICE <http://127.0.0.1:{port}/sparql> {{ ?s ?p ?o }} }}"
        status, body = ask(holder.url, query, bearer(holder))
        assert status == 403 and b"SERVICE is refused" in body
        with pytest.raises(TimeoutError):
            listener.accept()
    # the word in a string or an IRI is no SERVICE clause
    status, _ = ask(holder.url, 'SELECT ?s WHERE { ?s ?p "SERVICE" }', bearer(holder))
    assert status == 200


def test_malformed_requests_get_4xx_and_no_traceback(served, capfd):
    _, holder = served
    cases = [
        ("POST /sparql HTTP/1.1", {"Content-Type": "application/sparql-query"}, b"\xff\xfe not utf-8", 400),
        ("POST /sparql HTTP/1.1", {"Content-Type": "application/sparql-query"}, b"SELECT WHERE {", 400),
        ("POST /sparql HTTP/1.1", {"Content-Length": "abc"}, b"", 400),
        ("POST /sparql HTTP/1.1", {"Content-Length": str(MAX_REQUEST_BYTES + 1)}, b"", 413),
        ("GET /cnnprov/quads HTTP/1.1", {}, b"", 404),
        ("POST /sparql HTTP/1.1", {"Content-Type": "application/x-www-form-urlencoded"}, b"update=DROP+ALL", 403),
    ]
    port = int(holder.url.rsplit(":", 1)[1].split("/")[0])
    for line, headers, body, expected in cases:
        head = {"Host": f"127.0.0.1:{port}", **bearer(holder), "Connection": "close", **headers}
        head.setdefault("Content-Length", str(len(body)))
        raw = (line + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items()) + "\r\n").encode() + body
        with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
            connection.sendall(raw)
            answer = connection.recv(4096).decode("latin-1")
        assert answer.split()[1] == str(expected), (line, headers, answer[:200])
    assert "Traceback" not in capfd.readouterr().err


def test_idle_and_short_changed_connections_are_closed_and_the_connection_count_is_bounded(served):
    _, holder = served
    port = int(holder.url.rsplit(":", 1)[1].split("/")[0])
    idle = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(MAX_CONNECTIONS)]
    lying = (
        f"POST /sparql HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {holder.token}\r\n"
        "Content-Type: application/sparql-query\r\nContent-Length: 1000\r\n\r\nSELECT"
    ).encode()
    idle[0].sendall(lying)  # says 1,000 bytes, sends 6
    try:
        time.sleep(0.5)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as extra:
            extra.sendall(f"GET /sparql HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            assert extra.recv(4096).split()[1] == b"503"  # full: refused at once, not queued forever
        started = time.monotonic()
        for connection in idle:  # each is closed by the endpoint once idle for IDLE_TIMEOUT_S
            assert connection.recv(4096) == b""
        assert time.monotonic() - started < IDLE_TIMEOUT_S + 10
    finally:
        for connection in idle:
            connection.close()
    time.sleep(0.2)
    status, _ = ask(holder.url, COUNT, bearer(holder))
    assert status == 200  # and it serves again


def test_serve_needs_no_token_but_keeps_the_same_stance(tmp_path):
    path = tmp_path / "provenance"
    with cnnprov.open_session(path, serve_reads=False) as session:
        recorder = RunRecorder(session, name="served")
        recorder.start()
        recorder.finish()
        recorder.close()
    serving = subprocess.Popen(
        [sys.executable, "-m", "cnnprov.cli", "serve", "--store", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = serving.stdout.readline()
        url = line.split(" at ")[1].split()[0]
        assert ask(url, COUNT)[0] == 200
        assert ask(url, COUNT, {"Host": "attacker.example"})[0] == 403
        assert ask(url, f"SELECT * WHERE {{ SERVICE <{url}> {{ ?s ?p ?o }} }}")[0] == 403
        assert "served" in cli("runs", "--store", url).stdout
    finally:
        serving.terminate()
        serving.wait(timeout=30)


def test_a_query_past_the_time_limit_is_abandoned_and_leaves_the_store_free(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNPROV_QUERY_TIME_LIMIT_S", "1")
    path = tmp_path / "provenance"
    session = cnnprov.open_session(path)
    recorder = RunRecorder(session, name="served")
    recorder.start()
    recorder.finish()
    recorder.close()
    holder = read_holder(path)
    # a cross product of every quad with itself four times over: billions of solutions, for minutes
    endless = "SELECT * WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i . ?j ?k ?l }"
    started = time.monotonic()
    status, body = ask(holder.url, endless, bearer(holder))
    assert time.monotonic() - started < 15
    assert status == 503 and "time limit of 1 s" in json.loads(body)["message"]
    status, body = ask(holder.url, COUNT, bearer(holder))  # the endpoint goes on answering
    assert status == 200 and int(json.loads(body)["results"]["bindings"][0]["n"]["value"]) > 0
    session.close(wait=True)
    cnnprov.open_session(path, serve_reads=False).close(wait=True)  # nothing holds the store any more


def test_answers_keep_every_kind_of_term_as_the_sparql_json_format_has_it(served):
    _, holder = served
    query = (
        'SELECT ?iri ?plain ?typed ?tagged ?blank WHERE { VALUES (?iri ?plain ?typed ?tagged) '
        '{ (<http://example.org/x> "text" 42 "Wort"@de) } BIND(BNODE() AS ?blank) }'
    )
    status, body = ask(holder.url, query, bearer(holder))
    assert status == 200
    (row,) = json.loads(body)["results"]["bindings"]
    assert row["iri"] == {"type": "uri", "value": "http://example.org/x"}
    assert row["plain"] == {"type": "literal", "value": "text"}
    assert row["typed"] == {"type": "literal", "value": "42", "datatype": "http://www.w3.org/2001/XMLSchema#integer"}
    assert row["tagged"] == {"type": "literal", "value": "Wort", "xml:lang": "de"}
    assert row["blank"]["type"] == "bnode"
