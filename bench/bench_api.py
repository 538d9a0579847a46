"""Drive a live `streamlit run serve.py` on 127.0.0.1 from several processes; print accepted/s and p95 latency.

Phases: artifact submissions (one artifact per request), prediction-log rows (batches in `columns` form), then
kill -9 of the server in the middle of a stream of submissions, repeated, checking every acknowledged submission.
Usage: .venv/bin/python bench/bench_api.py [--procs 4] [--seconds 10] [--batch 5000] [--kill-rounds 10]
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from apikit import LIVE, columns_of, issue, live_release, log_rows, make_chain, seed_models, snapshot_body, \
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


def worker(kind: str, base: str, secret: str, seconds: float, batch: int, k: int, out: mp.Queue) -> None:
    latencies, accepted, i = [], 0, 0
    end = time.time() + seconds
    while time.time() < end:
        if kind == "artifacts":
            body = json.dumps(snapshot_body(k * 10_000_000 + i)).encode()
        else:
            body = json.dumps({"release": LIVE, "columns": columns_of(log_rows(batch, prefix=f"b{k}-{i}"))}).encode()
        t = time.perf_counter()
        status = post(base, "artifacts" if kind == "artifacts" else "signals", body, secret)
        latencies.append(time.perf_counter() - t)
        if status == 201:
            accepted += 1 if kind == "artifacts" else batch
        i += 1
    out.put((accepted, latencies))


def phase(kind: str, base: str, secret: str, procs: int, seconds: float, batch: int) -> None:
    out: mp.Queue = mp.Queue()
    started = time.time()
    ps = [mp.Process(target=worker, args=(kind, base, secret, seconds, batch, k, out)) for k in range(procs)]
    for p in ps:
        p.start()
    results = [out.get() for _ in ps]
    for p in ps:
        p.join()
    elapsed = time.time() - started
    accepted = sum(a for a, _ in results)
    lat = sorted(x for _, ls in results for x in ls)
    p95 = lat[int(0.95 * (len(lat) - 1))] * 1000 if lat else float("nan")
    unit = "artifact submissions" if kind == "artifacts" else f"signal rows (batches of {batch:,})"
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
    finally:
        stop_server(proc)
    kill_rounds(db, secret, args.kill_rounds, workdir)
    print(f"store and server log: {workdir}")


if __name__ == "__main__":
    main()
