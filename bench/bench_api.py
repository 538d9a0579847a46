"""Drive a live `streamlit run serve.py` on 127.0.0.1 from several processes; print accepted/s and p95 latency.

Phases: artifact submissions (one artifact per request), prediction-log rows (batches in `columns` form), then
kill -9 of the server in the middle of a stream of submissions, repeated, checking every acknowledged submission.
Signal batches move forward in time as a live stream does (--replay also measures batches that all cover the same
hours, each re-aggregating every row stored so far in those windows); their bodies are built before the clock starts.
Usage: .venv/bin/python bench/bench_api.py [--procs 4] [--seconds 10] [--batch 5000] [--kill-rounds 10] [--replay]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from apikit import LIVE, LIVE0, columns_of, issue, live_release, log_rows, make_chain, seed_models, snapshot_body, \
    start_server, stop_server  # noqa: E402
from lifecycle.store import Store  # noqa: E402


def post(base: str, path: str, body: bytes, secret: str) -> int:
    request = urllib.request.Request(f"{base}/api/v1/{path}", data=body, method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {secret}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _signal_body(batch: int, k: int, i: int, replay: bool) -> bytes:
    # A live stream moves forward in time: batch i of process k covers its own span of the log. With --replay
    # every batch covers the same hours, so each one re-aggregates every row stored so far in those windows.
    start = LIVE0 if replay else LIVE0 + timedelta(seconds=7 * batch * (i * 16 + k))  # up to 16 processes
    rows = log_rows(batch, start=start, prefix=f"b{k}-{i}")
    return json.dumps({"release": LIVE, "columns": columns_of(rows)}).encode()


def worker(kind: str, base: str, secret: str, seconds: float, batch: int, k: int, replay: bool,
           out: mp.Queue) -> None:
    latencies, accepted, i = [], 0, 0
    # Signal bodies are built before the clock starts, so the clients' JSON encoding does not compete for the
    # two cores with the server being measured.
    ready = [_signal_body(batch, k, j, replay) for j in range(max(2, int(seconds * 150_000 / batch / 4)))] \
        if kind == "signals" else []
    started = time.time()
    end = started + seconds
    while time.time() < end:
        if kind == "artifacts":
            body = json.dumps(snapshot_body(k * 10_000_000 + i)).encode()
        elif i < len(ready):
            body = ready[i]
        else:
            break
        t = time.perf_counter()
        status = post(base, "artifacts" if kind == "artifacts" else "signals", body, secret)
        latencies.append(time.perf_counter() - t)
        if status == 201:
            accepted += 1 if kind == "artifacts" else batch
        i += 1
    out.put((accepted, latencies, started, time.time()))


def phase(kind: str, base: str, secret: str, procs: int, seconds: float, batch: int, replay: bool = False) -> None:
    out: mp.Queue = mp.Queue()
    ps = [mp.Process(target=worker, args=(kind, base, secret, seconds, batch, k, replay, out))
          for k in range(procs)]
    for p in ps:
        p.start()
    results = [out.get() for _ in ps]
    for p in ps:
        p.join()
    elapsed = max(r[3] for r in results) - min(r[2] for r in results)
    accepted = sum(r[0] for r in results)
    lat = sorted(x for r in results for x in r[1])
    p95 = lat[int(0.95 * (len(lat) - 1))] * 1000 if lat else float("nan")
    unit = "artifact submissions" if kind == "artifacts" else (f"signal rows (batches of {batch:,}, "
                                                                 f"{'replaying the same hours' if replay else 'moving forward in time'})")
    print(f"{kind:9s}: {accepted / elapsed:10,.0f} accepted {unit}/s over {elapsed:.1f} s with {procs} processes; "
          f"{len(lat):,} requests, p95 latency {p95:.0f} ms", flush=True)


def kill_rounds(db: str, secret: str, rounds: int, workdir: Path) -> None:
    acked_digests, acked_rows = [], []
    for r in range(rounds):
        proc, base = start_server(db, workdir / "server.log")
        deadline, i = time.time() + 0.5 + (r % 4) * 0.3, 0
        while time.time() < deadline:
            body = snapshot_body(900_000_000 + r * 100_000 + i)
            if post(base, "artifacts", json.dumps(body).encode(), secret) == 201:
                acked_digests.append(body)
            rows = log_rows(200, prefix=f"kill{r}-{i}")
            if post(base, "signals", json.dumps({"release": LIVE, "rows": rows}).encode(), secret) == 201:
                acked_rows += [x["request_id"] for x in rows]
            i += 1
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: the next request would have followed at once
        proc.wait(10)
        store = Store(db)
        ok, reason = store.verify_audit()
        stored = set(store.frame("SELECT request_id FROM prediction_log")["request_id"])
        missing = [b for b in acked_digests if not store.has(_digest(b))]
        store.close()
        print(f"kill -9 round {r + 1}/{rounds}: reopened; audit {reason if ok else 'BROKEN: ' + reason}; "
              f"{len(acked_digests)} acknowledged artifacts, {len(missing)} missing; {len(acked_rows):,} acknowledged "
              f"rows, {len(set(acked_rows) - stored)} missing", flush=True)


def _digest(body: dict) -> str:
    from lifecycle.ingest import validate_artifact
    return validate_artifact(body).digest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--batch", type=int, default=5000, help="prediction-log rows per signals request")
    parser.add_argument("--kill-rounds", type=int, default=10)
    parser.add_argument("--replay", action="store_true", help="also measure batches that all cover the same hours")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="seamline-bench-api-"))
    db = str(workdir / "seamline.duckdb")
    store = Store(db)
    seed_models(store)
    live_release(store, make_chain(store))
    secret = issue(store, "bench", ["artifacts", "signals"])
    store.close()
    proc, base = start_server(db, workdir / "server.log")
    try:
        phase("artifacts", base, secret, args.procs, args.seconds, args.batch)
        phase("signals", base, secret, args.procs, args.seconds, args.batch)
        if args.replay:
            phase("signals", base, secret, args.procs, args.seconds, args.batch, replay=True)
    finally:
        stop_server(proc)
    kill_rounds(db, secret, args.kill_rounds, workdir)
    print(f"store and server log: {workdir}")


if __name__ == "__main__":
    main()
