"""Benchmark every dataset quality check over a generated Parquet file (default 5M rows, 15 columns)."""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lifecycle.models import (  # noqa: E402
    FeatureDefinition,
    LabelDefinition,
    PointInTime,
    QualityThresholds,
)
from lifecycle.quality import load_data, run_quality_checks  # noqa: E402
from lifecycle.snapshots import file_sha256  # noqa: E402

AS_OF = datetime(2024, 6, 1)
DELAY_DAYS = 7
INJECTED = {"leaking_rows": 37, "duplicate_rows": 1000, "immature_rows": 23}


def generate(path: Path, rows: int, seed: int = 0) -> None:
    """Write a Parquet file of `rows` transactions with known leaks, duplicates and immature labels."""
    rng = np.random.default_rng(seed)
    as_of_us = np.datetime64(AS_OF, "us")
    offsets = rng.integers(3_600_000_000, 90 * 86_400_000_000, rows)  # 1 h .. 90 days before as_of
    event_time = as_of_us - offsets.astype("timedelta64[us]")
    feature_time = event_time - rng.integers(1, 3_600_000_000, rows).astype("timedelta64[us]")
    ids = np.arange(rows, dtype=np.int64)
    mature = event_time <= as_of_us - np.timedelta64(DELAY_DAYS, "D")
    label = (rng.random(rows) < 0.04).astype(np.int8)
    label_mask = ~mature

    # Known defects, so the bench exercises the sample queries and the answers can be checked.
    leak = rng.choice(np.flatnonzero(mature), INJECTED["leaking_rows"], replace=False)
    feature_time[leak] = event_time[leak] + np.timedelta64(60_000_000, "us")
    dup = rng.choice(rows, INJECTED["duplicate_rows"], replace=False)
    ids[dup] = rng.choice(np.setdiff1d(np.arange(rows), dup), INJECTED["duplicate_rows"], replace=False)
    immature = rng.choice(np.flatnonzero(~mature), INJECTED["immature_rows"], replace=False)
    label_mask[immature] = False

    def categorical(values: list[str], p: list[float] | None = None) -> pa.DictionaryArray:
        idx = rng.choice(len(values), rows, p=p).astype(np.int32)
        return pa.DictionaryArray.from_arrays(pa.array(idx), pa.array(values))

    balance = rng.normal(2_000, 800, rows)
    table = pa.table({
        "id": ids,
        "customer_id": rng.integers(0, 400_000, rows),
        "event_time": pa.array(event_time, pa.timestamp("us")),
        "feature_time": pa.array(feature_time, pa.timestamp("us")),
        "amount": rng.lognormal(3, 1.2, rows),
        "balance": pa.array(balance, mask=rng.random(rows) < 0.01),
        "n_items": rng.integers(1, 20, rows).astype(np.int32),
        "account_age_days": rng.integers(0, 3_650, rows).astype(np.int32),
        "external_score": rng.beta(2, 5, rows),
        "channel": categorical(["web", "app", "pos", "phone"], [0.45, 0.35, 0.15, 0.05]),
        "country": categorical([f"C{i:02d}" for i in range(30)]),
        "device": categorical(["ios", "android", "desktop", "other"]),
        "merchant": categorical([f"merchant-{i:05d}" for i in range(5_000)]),
        "is_new_customer": rng.random(rows) < 0.1,
        "label": pa.array(label, mask=label_mask),
    })
    pq.write_table(table, path, row_group_size=1_000_000)


def spec() -> dict:
    """Return the features, label and point-in-time rules of the generated file."""
    feats = [("customer_id", "category"), ("amount", "float"), ("balance", "float"), ("n_items", "int"),
             ("account_age_days", "int"), ("external_score", "float"), ("channel", "category"),
             ("country", "category"), ("device", "category"), ("merchant", "string"), ("is_new_customer", "bool")]
    return dict(
        features=[FeatureDefinition(name=n, dtype=d, source="transactions", transformation="raw", owner="bench")
                  for n, d in feats],
        label=LabelDefinition(column="label", definition="chargeback within 7 days", delay_days=DELAY_DAYS),
        point_in_time=PointInTime(as_of=AS_OF, feature_cutoff=AS_OF, label_window_start=AS_OF - timedelta(days=91),
                                  label_window_end=AS_OF - timedelta(days=DELAY_DAYS),
                                  event_time_column="event_time", feature_time_column="feature_time"),
        key_columns=["id"],
        thresholds=QualityThresholds(),
        now=AS_OF + timedelta(hours=1),
    )


class _Timings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seconds: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if hasattr(record, "check"):
            self.seconds[record.check] = record.seconds


def run_checks(path: Path) -> dict:
    """Open the file and run every check, timing each; return the figures as a dict."""
    timings = _Timings()
    logger = logging.getLogger("lifecycle.quality")
    logger.addHandler(timings)
    logger.setLevel(logging.DEBUG)
    started = time.perf_counter()
    with load_data(path) as data:
        opened = time.perf_counter()
        rows = data.row_count()
        results = run_quality_checks(data, **spec())
    finished = time.perf_counter()
    hashed_start = time.perf_counter()
    file_sha256(path)
    hash_seconds = time.perf_counter() - hashed_start
    return {
        "rows": rows,
        "open_seconds": opened - started,
        "checks": [{"name": r.name, "status": r.status.value, "seconds": timings.seconds[r.name],
                    "reason": r.reason} for r in results],
        "total_seconds": finished - started,
        "sha256_seconds": hash_seconds,
        "evidence": {r.name: {k: v for k, v in r.evidence.items() if k in INJECTED} for r in results},
        "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def main() -> None:
    """Generate the file, run the checks in a fresh child process and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--keep", type=Path, help="write the Parquet file here and keep it")
    parser.add_argument("--run-checks", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_checks:
        print(json.dumps(run_checks(args.run_checks)))
        return

    with tempfile.TemporaryDirectory(prefix="seamline-bench-") as tmp:
        path = args.keep or Path(tmp) / "bench.parquet"
        t0 = time.perf_counter()
        generate(path, args.rows)
        gen_seconds = time.perf_counter() - t0
        print(f"generated {args.rows:,} rows x 15 columns in {gen_seconds:.1f} s "
              f"({path.stat().st_size / 2**20:.0f} MiB Parquet)")
        # A fresh process, so the peak memory is the checks' own and not the generator's.
        out = subprocess.run([sys.executable, __file__, "--run-checks", str(path)],
                             check=True, capture_output=True, text=True)
        fig = json.loads(out.stdout)

    print(f"\n{'step':<16}{'seconds':>9}  status  reason")
    print(f"{'open':<16}{fig['open_seconds']:>9.3f}")
    for c in fig["checks"]:
        print(f"{c['name']:<16}{c['seconds']:>9.3f}  {c['status']:<6}  {c['reason'][:90]}")
    total = fig["total_seconds"]
    print(f"{'all checks':<16}{total:>9.3f}  (open + every check; target < 10 s)")
    print(f"\nrows/s: {fig['rows'] / total:,.0f}")
    print(f"peak memory: {fig['maxrss_kib'] / 1024:,.0f} MiB "
          "(resource.getrusage ru_maxrss of the child process that ran the checks)")
    print(f"file sha256 (not part of the checks): {fig['sha256_seconds']:.3f} s")
    found = {k: v for ev in fig["evidence"].values() for k, v in ev.items()}
    print(f"injected defects found: {found} (expected {INJECTED})")
    if found != INJECTED:
        sys.exit("the checks did not find the injected defects")


if __name__ == "__main__":
    main()
