"""Arrange helpers for the API, security and reliability tests and the API bench: a live release, tokens, bodies."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from conftest import PEOPLE, T0, make_model, make_snapshot
from lifecycle.identity import user_for
from lifecycle.models import FallbackPath, Release, ReleaseState, RolloutNote, Stage, StageCondition, StopRule
from lifecycle.releases import transition
from lifecycle.store import Store
from lifecycle.tokens import create_token

LIVE = "rel-live"
LIVE0 = T0 + timedelta(days=1)
PLATFORM = PEOPLE["platform"].email


def live_release(store: Store, chain: dict) -> Release:
    """Store a rollout note and a release of the chain's candidate, approved and moved to canary."""
    cand, base = chain["cand"], chain["base"]
    note = RolloutNote(
        model="fraud", created_by="r@x.test", created_at=T0, candidate=cand.digest, baseline=base.digest,
        release_object="api test", release_owner="r@x.test", success_metrics=chain["note"].success_metrics,
        blast_radius=chain["note"].blast_radius,
        stop_rules=[StopRule(name="p95", metric="latency_p95_ms", comparator=">", threshold=10_000,
                             window_minutes=60, min_volume=10, failure_limit=1)],
        fallback=FallbackPath(serving=base.digest, description="champion", tested=True),
        stages=[StageCondition(stage=Stage.CANARY, traffic_share=0.1, min_duration_hours=1, min_volume=10)])
    store.put_artifact(note, "r@x.test", T0)
    store.create_release(Release(id=LIVE, model="fraud", title="live", candidate=cand.digest, baseline=base.digest,
                                 rollout_note=note.digest, policy_version=1, state=ReleaseState.APPROVED,
                                 serving=base.digest, created_by="r@x.test", created_at=T0), "r@x.test")
    store.set_alias("fraud", "champion", base.digest, PLATFORM, T0)
    transition(store, user_for(store, PLATFORM), LIVE, ReleaseState.CANARY, LIVE0, "go live")
    return store.release(LIVE)


def issue(store: Store, name: str, scopes: list[str], model: str = "fraud") -> str:
    """Create a token as the Platform owner and return its secret."""
    return create_token(store, user_for(store, PLATFORM), name, model, scopes, T0).secret


def bearer(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}"}


def snapshot_body(i: int, model: str = "fraud") -> dict:
    """A valid, parent-free artifact whose digest differs per i."""
    return json.loads(make_snapshot(model=model, name=f"api-{i}").model_dump_json())


def log_rows(n: int, start: datetime = LIVE0, prefix: str = "r", release: str = LIVE) -> list[dict]:
    """n valid prediction-log rows, one a minute from `start`, in two segments and both canary arms."""
    base = start.replace(tzinfo=None)
    return [{"request_id": f"{prefix}-{i}", "timestamp": (base + timedelta(seconds=7 * i)).isoformat(),
             "release": release, "stage": "canary", "arm": "canary" if i % 2 else "baseline",
             "segment": "region=EU" if i % 3 else "region=US", "latency_ms": 40.0 + i % 17, "error": False,
             "fallback": i % 50 == 0, "cost": 0.0002, "candidate_score": (i % 97) / 97,
             "baseline_score": (i % 89) / 89, "decision": int(i % 97 >= 48), "baseline_decision": int(i % 89 >= 44)}
            for i in range(n)]


def columns_of(rows: list[dict]) -> dict:
    return {k: [r[k] for r in rows] for k in rows[0]}


def window(start: datetime, segment: str = "region=EU", requests: int = 100) -> dict:
    return {"start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat(), "stage": "canary",
            "arm": "canary", "segment": segment, "requests": requests,
            "metrics": {"fallback_rate": 0.01, "latency_p95_ms": 80.0}}


def escalation(case_id: str, model: str = "fraud", text: str = "customer disputes the block") -> dict:
    return {"case_id": case_id, "at": T0.isoformat(), "model": model, "segment": "region=EU", "type": "escalation",
            "score": 0.7, "decision": "block", "severity": "medium", "text": text}


def seed_models(store: Store) -> None:
    """A second model so wrong-model tokens can be tested."""
    store.put_model(make_model("churn"))


def start_server(db, log_path) -> tuple:
    """Start `streamlit run serve.py` over `db` on a free 127.0.0.1 port; return (process, base URL) once healthy."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    from browser import ROOT, free_port

    port = free_port()
    log = open(log_path, "a")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "serve.py", "--server.headless", "true", "--server.address",
         "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=ROOT, env={**os.environ, "SEAMLINE_DB": str(db)}, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{base}/api/v1/health", timeout=2) as r:
                if r.status == 200:
                    return proc, base
        except OSError:
            pass
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("server did not start: " + open(log_path).read()[-2000:])
        time.sleep(0.2)


def stop_server(proc) -> None:
    """Stop a server started by start_server, by its PID."""
    import subprocess

    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def make_chain(store: Store) -> dict:
    """Store the same small chain as conftest's `chain` fixture (for scripts outside pytest, e.g. the bench)."""
    from conftest import make_entry, make_note, make_report, make_run
    from lifecycle.models import DataFile
    from lifecycle.policy import default_policy
    from lifecycle.snapshots import file_sha256

    store.put_model(make_model())
    store.put_policy(default_policy("fraud", "r@x.test", T0), "r@x.test")
    data = store.data_root / "x.parquet"
    data.write_bytes(b"rows of the snapshot")
    snap = make_snapshot(files=[DataFile(path="x.parquet", sha256=file_sha256(data), bytes=data.stat().st_size)])
    base_run, cand_run = make_run(snap, seed=1), None
    cand_run = make_run(snap, seed=2, baseline=base_run.digest)
    report = make_report(cand_run, base_run, snap)
    base, cand = make_entry(base_run, None, 1), make_entry(cand_run, report, 2)
    note = make_note(cand, base)
    store.put_artifacts([snap, base_run, cand_run, report, base, cand, note], "a@x.test")
    return {"snapshot": snap, "base": base, "cand": cand, "note": note}
