"""Benchmark the live path through the store: ingest a prediction log, re-ingest it, then apply delayed labels."""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import T0, make_entry, make_model, make_note, make_report, make_run, make_snapshot  # noqa: E402
from lifecycle.models import Release, ReleaseState  # noqa: E402
from lifecycle.monitoring import ingest_labels, ingest_prediction_log  # noqa: E402
from lifecycle.policy import default_policy  # noqa: E402
from lifecycle.store import Store  # noqa: E402

SEGMENTS = [f"region={r}/channel={c}" for r in ("EU", "US", "APAC", "LATAM") for c in ("web", "mobile", "branch")]


def live_store(path: Path) -> Store:
    """Return a store holding one release in canary (the test factories' small chain)."""
    store = Store(path)
    store.put_model(make_model())
    store.put_policy(default_policy("fraud", "r@x.test", T0), "r@x.test")
    snap = make_snapshot()
    base_run, cand_run = make_run(snap, seed=1), make_run(snap, seed=2)
    report = make_report(cand_run, base_run, snap)
    base, cand = make_entry(base_run, None, 1), make_entry(cand_run, report, 2)
    note = make_note(cand, base)
    store.put_artifacts([snap, base_run, cand_run, report, base, cand, note], "bench")
    store.create_release(Release(id="bench", model="fraud", title="bench", candidate=cand.digest,
                                 baseline=base.digest, rollout_note=note.digest, policy_version=1,
                                 state=ReleaseState.CANARY, serving=cand.digest, created_by="bench",
                                 created_at=T0), "bench")
    return store


def generate(rows: int, hours: int, seed: int = 7) -> pd.DataFrame:
    """Return a canary log: 10% canary, 90% baseline, 12 segments, no labels yet."""
    rng = np.random.default_rng(seed)
    offset = np.sort(rng.integers(0, hours * 3600 * 10**6, rows))
    candidate = rng.beta(2, 5, rows)
    baseline = np.clip(candidate + rng.normal(0, 0.08, rows), 0, 1)
    return pd.DataFrame({
        "request_id": pd.Series(np.arange(rows)).map("r{:08d}".format).astype(str),
        "timestamp": pd.Timestamp(T0.replace(tzinfo=None)) + pd.to_timedelta(offset, unit="us"),
        "release": "bench", "stage": "canary", "arm": np.where(rng.random(rows) < 0.1, "canary", "baseline"),
        "segment": rng.choice(SEGMENTS, rows), "latency_ms": rng.lognormal(np.log(40), 0.4, rows),
        "error": rng.random(rows) < 0.001, "fallback": rng.random(rows) < 0.005, "cost": 0.0002,
        "candidate_score": candidate, "baseline_score": baseline, "decision": (candidate > 0.5).astype(int),
        "baseline_decision": (baseline > 0.5).astype(int), "label": np.nan,
        "_label": (rng.random(rows) < candidate).astype(int),
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--hours", type=int, default=48)
    args = parser.parse_args()
    log = generate(args.rows, args.hours)
    labels = log.iloc[::2][["request_id", "_label"]].rename(columns={"_label": "label"})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log.parquet"
        log.drop(columns="_label").to_parquet(path, index=False)
        store = live_store(Path(tmp) / "seamline.duckdb")
        now = T0 + timedelta(hours=args.hours)
        for step, run in (("ingest", lambda: ingest_prediction_log(store, "bench", path, 60, "bench", now)),
                          ("re-ingest (no change)", lambda: ingest_prediction_log(store, "bench", path, 60, "bench",
                                                                                   now)),
                          ("delayed labels (half)", lambda: ingest_labels(store, "bench", labels, "bench", now))):
            t = time.perf_counter()
            result = run()
            print(f"{step:24} {time.perf_counter() - t:6.2f} s  {result.message}")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{args.rows:,} rows over {args.hours} h; peak RSS {peak:,.0f} MB")


if __name__ == "__main__":
    main()
