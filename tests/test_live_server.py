"""A live `streamlit run serve.py`: UI and API in one process, the CLI through --server, and kill -9 mid-stream."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from apikit import LIVE, issue, live_release, log_rows, seed_models, snapshot_body, start_server, stop_server
from browser import ROOT
from lifecycle.store import Store


@pytest.fixture
def prepared(store, chain):
    """A closed store file holding a live release and a token allowed everything on 'fraud'."""
    seed_models(store)
    live_release(store, chain)
    secret = issue(store, "pipeline", ["artifacts", "signals", "escalations"])
    path = store.path
    store.close()
    return path, secret


def send(base: str, path: str, body, secret: str) -> tuple[int, dict]:
    request = urllib.request.Request(f"{base}/api/v1/{path}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {secret}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def cli(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lifecycle", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60)


def test_serve_py_serves_the_ui_and_the_api_from_one_process(prepared, tmp_path):
    path, secret = prepared
    proc, base = start_server(path, tmp_path / "server.log")

    try:
        with urllib.request.urlopen(f"{base}/_stcore/health", timeout=5) as r:
            ui_health = r.read().decode()
        status, body = send(base, "artifacts", snapshot_body(1), secret)
    finally:
        stop_server(proc)

    assert ui_health.strip() == "ok"
    assert status == 201 and len(body["digests"]) == 1


def test_the_cli_sends_to_a_running_server_and_says_how_when_the_file_is_locked(prepared, tmp_path):
    path, secret = prepared
    artifact = tmp_path / "a.json"
    artifact.write_text(json.dumps(snapshot_body(2)))
    proc, base = start_server(path, tmp_path / "server.log")

    try:
        locked = cli("--db", path, "ingest", str(artifact))
        sent = cli("ingest", str(artifact), "--server", base, env={"SEAMLINE_TOKEN": secret})
        refused = cli("ingest", str(artifact), "--server", base, env={"SEAMLINE_TOKEN": "slt_wrong"})
    finally:
        stop_server(proc)

    assert locked.returncode != 0 and "--server" in locked.stderr
    assert sent.returncode == 0, sent.stderr
    digest = sent.stdout.strip()
    assert refused.returncode != 0 and "401" in refused.stderr and "unknown token" in refused.stderr
    store = Store(path)
    assert store.has(digest)
    assert [e.actor for e in store.audit_events(subject=digest)] == ["pipeline"]
    store.close()


def _stream(base: str, secret: str, start: int, acked: dict, stop: threading.Event) -> None:
    """Submit artifacts and log batches in turn until stopped or the server dies; record what was acknowledged."""
    i = start
    while not stop.is_set():
        try:
            status, body = send(base, "artifacts", snapshot_body(i), secret)
            if status == 201:
                acked["digests"] += body["digests"]
            rows = log_rows(50, prefix=f"k{i}")
            status, body = send(base, "signals", {"release": LIVE, "rows": rows}, secret)
            if status == 201:
                acked["requests"] += [r["request_id"] for r in rows]
        except (OSError, ValueError):
            return
        i += 1


@pytest.mark.timeout(300)
def test_every_acknowledged_submission_survives_kill_9_of_the_server(prepared, tmp_path):
    path, secret = prepared
    acked: dict[str, list] = {"digests": [], "requests": []}

    for round_ in range(3):
        proc, base = start_server(path, tmp_path / "server.log")
        stop = threading.Event()
        worker = threading.Thread(target=_stream, args=(base, secret, round_ * 100_000, acked, stop))
        worker.start()
        deadline = time.time() + 30
        seen = len(acked["requests"])
        while len(acked["requests"]) == seen and time.time() < deadline:  # kill mid-stream, not before it
            time.sleep(0.05)
        time.sleep(0.2 + round_ * 0.37)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        stop.set()
        worker.join(30)

    store = Store(path)
    stored_log = set(store.frame("SELECT request_id FROM prediction_log")["request_id"])
    ok, reason = store.verify_audit()
    audited = {e.subject for e in store.audit_events() if e.action == "dataset_snapshot.put"}
    stored = set(store.frame("SELECT digest FROM artifacts WHERE kind = 'dataset_snapshot'")["digest"])
    store.close()
    assert acked["digests"] and acked["requests"]
    assert set(acked["digests"]) <= stored
    assert set(acked["requests"]) <= stored_log
    assert ok, reason
    assert stored == audited  # none half-written: every stored artifact has its audit entry and vice versa
