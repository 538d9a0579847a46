"""Benchmark prediction-log aggregation into windows and stop-rule evaluation on a generated 10M-row log."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REGIONS = ("EU", "US", "APAC", "LATAM")
CHANNELS = ("web", "mobile", "branch")
SEGMENTS = tuple(f"region={r}/channel={c}" for r in REGIONS for c in CHANNELS)
HOURS = 7 * 24


def _dictionary(codes: np.ndarray, values: tuple[str, ...]) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), pa.array(values, pa.string()))


def generate(path: str, rows: int, seed: int = 7) -> None:
    """Write a week of prediction log as Parquet: shadow, canary, ramp (A/B) and full, with a slow EU canary."""
    rng = np.random.default_rng(seed)
    t0 = np.datetime64("2026-03-02T00:00:00", "us")
    offset_us = np.sort(rng.integers(0, HOURS * 3600 * 10**6, rows))
    hour = offset_us // (3600 * 10**6)
    # Day 1 shadow, days 2-3 canary (10% canary, 90% baseline), days 4-5 ramp (A/B 50/50),
    # days 6-7 full (95% treatment, 5% control holdout).
    stage = np.select([hour < 24, hour < 72, hour < 120], [0, 1, 2], 3).astype(np.int8)
    u = rng.random(rows)
    arm = np.select(
        [stage == 0, (stage == 1) & (u < 0.1), stage == 1, (stage == 2) & (u < 0.5), stage == 2, u < 0.95],
        [0, 1, 4, 2, 3, 2], 3,
    ).astype(np.int8)  # codes into ARMS below
    segment = rng.integers(0, len(SEGMENTS), rows)
    candidate_arm = np.isin(arm, (0, 1, 2))
    latency = rng.lognormal(np.log(120), 0.45, rows)
    # The canary is slow in EU during its second day: the p95 latency rule must trip there and nowhere else.
    slow = (arm == 1) & (segment // len(CHANNELS) == 0) & (hour >= 48) & (hour < 60)
    latency[slow] *= 2.6
    candidate_score = rng.beta(2, 5, rows)
    baseline_score = np.clip(candidate_score + rng.normal(0, 0.08, rows), 0, 1)
    baseline_decision = (baseline_score > 0.5).astype(np.int8)
    decision = np.where(candidate_arm, (candidate_score > 0.5).astype(np.int8), baseline_decision)
    # Labels arrive two days late: requests from the last 48 hours have none yet.
    label = (rng.random(rows) < candidate_score).astype(np.int8)
    label_mask = hour >= HOURS - 48
    ids = pc.binary_join_element_wise("r", pc.cast(pa.array(np.arange(rows)), pa.string()), "")
    table = pa.table({
        "request_id": ids,
        "timestamp": pa.array(t0 + offset_us.astype("timedelta64[us]")),
        "release": _dictionary(np.zeros(rows, np.int8), ("fraud-v7",)),
        "stage": _dictionary(stage, ("shadow", "canary", "ramp", "full")),
        "arm": _dictionary(arm, ("shadow", "canary", "treatment", "control", "baseline")),
        "segment": _dictionary(segment, SEGMENTS),
        "latency_ms": latency,
        "error": rng.random(rows) < 0.002,
        "fallback": rng.random(rows) < np.where(candidate_arm, 0.012, 0.01),
        "cost": 0.0004 + rng.gamma(2.0, 0.00005, rows),
        "candidate_score": candidate_score,
        "baseline_score": baseline_score,
        "decision": decision,
        "baseline_decision": baseline_decision,
        "label": pa.array(label, mask=label_mask),
    })
    pq.write_table(table, path, row_group_size=1 << 20)


def _maxrss_mb(who: int) -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(who).ru_maxrss / 1024


def main() -> None:
    """Generate the log (in a child process), then time validation+aggregation and stop-rule evaluation."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--window-minutes", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keep", metavar="PATH", help="reuse (or write) the Parquet log at PATH")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of aggregate + rules (best is reported)")
    args = parser.parse_args()

    import duckdb

    from lifecycle.models import Stage, StopRule
    from lifecycle.signals import aggregate_windows
    from lifecycle.stoprules import evaluate_stop_rules

    workdir = tempfile.TemporaryDirectory(prefix="seamline-bench-")
    path = args.keep or os.path.join(workdir.name, "prediction_log.parquet")
    if not (args.keep and os.path.exists(path)):
        started = time.perf_counter()
        # A child process generates the log, so the parent's peak RSS below measures aggregation and rules only.
        child = multiprocessing.get_context("spawn").Process(target=generate, args=(path, args.rows))
        child.start()
        child.join()
        if child.exitcode != 0:
            raise SystemExit(f"generation failed with exit code {child.exitcode}")
        size_mib = os.path.getsize(path) / 2**20
        print(f"generate {args.rows:,} rows -> Parquet: {time.perf_counter() - started:.2f} s ({size_mib:.0f} MiB, "
              f"not counted; child peak RSS {_maxrss_mb(resource.RUSAGE_CHILDREN):.0f} MiB)")

    rules = [
        StopRule(name="p95 latency", metric="latency_p95_ms", comparator=">", threshold=300.0,
                 window_minutes=args.window_minutes, min_volume=200, failure_limit=2, stages=[Stage.CANARY]),
        StopRule(name="error rate", metric="error_rate", comparator=">", threshold=0.01,
                 window_minutes=args.window_minutes, min_volume=300, failure_limit=1, action="rollback"),
        StopRule(name="fallback rate", metric="fallback_rate", comparator=">", threshold=0.03,
                 window_minutes=args.window_minutes, min_volume=300, failure_limit=2, consecutive=True),
        StopRule(name="disagreement", metric="disagreement_rate", comparator=">", threshold=0.15,
                 window_minutes=args.window_minutes, min_volume=300, failure_limit=3),
    ]
    con = duckdb.connect()
    con.execute(f"SET threads = {int(args.threads)}")
    con.execute("SET enable_progress_bar = false")
    rss_before = _maxrss_mb(resource.RUSAGE_SELF)

    runs = []
    for run in range(1, args.repeat + 1):
        wall, cpu = time.perf_counter(), time.process_time()
        windows = aggregate_windows(con, path, window_minutes=args.window_minutes)
        wall_agg, cpu_agg = time.perf_counter(), time.process_time()
        verdicts = {stage: evaluate_stop_rules(rules, windows, stage=stage) for stage in Stage}
        wall_rules, cpu_rules = time.perf_counter(), time.process_time()
        runs.append((wall_agg - wall, wall_rules - wall_agg, wall_rules - wall))
        print(f"run {run}: validate + aggregate (one scan) {wall_agg - wall:.2f} s wall / {cpu_agg - cpu:.2f} s CPU; "
              f"{len(rules)} stop rules x {len(Stage)} stages {wall_rules - wall_agg:.3f} s wall / "
              f"{cpu_rules - cpu_agg:.3f} s CPU; total {wall_rules - wall:.2f} s")

    aggregate_s, rules_s, total_s = min(runs, key=lambda r: r[2])
    print(f"\n{args.rows:,} rows -> {len(windows):,} windows of {args.window_minutes} minutes "
          f"(per release, stage, arm, segment + 'all')")
    print(f"best run: aggregate {aggregate_s:.2f} s + rules {rules_s:.3f} s = {total_s:.2f} s "
          f"(target < 5 s on {args.threads} threads: {'OK' if total_s < 5 else 'OVER TARGET'}); "
          f"worst run {max(r[2] for r in runs):.2f} s")
    print(f"peak RSS of this process, from resource.getrusage(RUSAGE_SELF).ru_maxrss: "
          f"{_maxrss_mb(resource.RUSAGE_SELF):.0f} MiB (after imports, before aggregating: {rss_before:.0f} MiB; "
          f"generation ran in a child process)")
    for stage, stage_verdicts in verdicts.items():
        for verdict in stage_verdicts:
            print(f"  [{stage.value:6}] {verdict.status.value:12} {verdict.reason}")

if __name__ == "__main__":
    main()
