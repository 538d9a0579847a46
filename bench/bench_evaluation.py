"""Benchmark the evaluation engine on generated 1M- and 10M-row scored sets with 30 segments.

Run: .venv/bin/python bench/bench_evaluation.py [--rows 1000000 10000000] [--bootstrap 1000]

Each measurement runs in a fresh subprocess (so one measurement's memory cannot hide another's) that
generates the data, then times one task:

* report: lifecycle.evaluation.evaluate, all metrics, paired bootstrap, calibration, a named slice,
  two regression cases, shift checks on 3 features against a reference of rows/5;
* points: lifecycle.evaluation.measure_segments, both models' point metrics on all 42 segments
  (overall, 6 regions, 5 channels, 30 region x channel cells);
* loop: a plain pandas groupby + scikit-learn loop computing the same point metrics
  (ROC AUC, PR AUC, log loss, Brier, precision, recall) per segment and model.

"wall s" is elapsed time, "CPU s" the process's user+system CPU time over all its threads (the engine
runs the two models on two threads), "load" the 1-minute load average when the task started: on a shared
machine a wall time well above the CPU time means the process was waiting for a core.

Memory is measured two ways and both are printed: "peak RSS" is the process's resident-set high-water
mark (getrusage ru_maxrss, which includes the generated data and the interpreter), and "+RSS" is the
peak increase of resident memory during the timed call over the RSS just before it, sampled every 5 ms
from /proc/self/statm by a background thread.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REGIONS = ["AMER", "EMEA", "APAC", "LATAM", "ANZ", "JP"]
REGION_SHARE = [0.34, 0.28, 0.18, 0.1, 0.06, 0.04]
CHANNELS = ["web", "mobile", "partner", "branch", "phone"]
CHANNEL_SHARE = [0.45, 0.3, 0.12, 0.08, 0.05]


def make_scores(rows: int, seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Generate a scored evaluation set and a reference window with skewed segment sizes."""
    rng = np.random.default_rng(seed)
    region = rng.choice(len(REGIONS), rows, p=REGION_SHARE).astype(np.int8)
    channel = rng.choice(len(CHANNELS), rows, p=CHANNEL_SHARE).astype(np.int8)
    base_rate = 0.04 + 0.02 * region + 0.015 * channel
    y = (rng.random(rows) < base_rate).astype(np.int8)
    z = rng.standard_normal(rows)
    strength_c = np.full(rows, 1.35)
    # One regressing segment: the candidate is much weaker on APAC / mobile.
    strength_c[(region == 2) & (channel == 1)] = 0.7
    logit_c = strength_c * y + 0.9 * z + 0.45 * rng.standard_normal(rows) - 2.6
    logit_b = 1.25 * y + 0.9 * z + 0.45 * rng.standard_normal(rows) - 2.6
    amount = rng.lognormal(5.5, 1.2, rows)
    frame = pd.DataFrame({
        "label": y,
        "candidate": 1 / (1 + np.exp(-logit_c)),
        "baseline": 1 / (1 + np.exp(-logit_b)),
        "region": pd.array(np.array(REGIONS)[region], dtype="str"),
        "channel": pd.array(np.array(CHANNELS)[channel], dtype="str"),
        "amount": amount,
        "tenure_days": rng.integers(0, 3650, rows),
        "device": pd.array(np.array(["ios", "android", "desktop"])[rng.integers(0, 3, rows)], dtype="str"),
    })
    ref_rows = max(rows // 5, 1)
    reference = pd.DataFrame({
        "amount": rng.lognormal(5.4, 1.2, ref_rows),
        "tenure_days": rng.integers(0, 3650, ref_rows),
        "device": pd.array(np.array(["ios", "android", "desktop"])[rng.choice(3, ref_rows, p=[.4, .35, .25])],
                           dtype="str"),
    })
    return frame, reference


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _RssSampler:
    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(0.005)

    def __enter__(self) -> "_RssSampler":
        self.before = _rss_bytes()
        self.peak = self.before
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def _pandas_loop(frame: pd.DataFrame, threshold: float) -> int:
    from sklearn.metrics import (average_precision_score, brier_score_loss, log_loss, precision_score,
                                 recall_score, roc_auc_score)

    groups = [("all", frame)]
    for column in ("region", "channel"):
        groups += list(frame.groupby(column, observed=True))
    groups += list(frame.groupby(["region", "channel"], observed=True))
    count = 0
    for _, part in groups:
        y = part["label"].to_numpy()
        for model in ("candidate", "baseline"):
            s = part[model].to_numpy()
            pred = s >= threshold
            roc_auc_score(y, s)
            average_precision_score(y, s)
            log_loss(y, s, labels=[0, 1])
            brier_score_loss(y, s)
            precision_score(y, pred, zero_division=0)
            recall_score(y, pred, zero_division=0)
            count += 1
    return count


def run_task(rows: int, task: str, bootstrap: int) -> dict:
    """Generate the data and time one task; return the measurement as a dict."""
    from lifecycle.evaluation import evaluate, measure_segments
    from lifecycle.models import EvaluationSettings, RegressionCase

    frame, reference = make_scores(rows)
    settings = EvaluationSettings(
        bootstrap=bootstrap, min_segment_size=500, max_segment_drop=0.01,
        slices={"big_web": "amount > 1000 and channel == 'web'"},
        regression_cases=[
            RegressionCase(name="big web AUC", slice="amount > 1000 and channel == 'web'", min_value=0.75),
            RegressionCase(name="mobile keeps AUC", slice="channel == 'mobile'", max_drop=0.02),
        ],
    )
    # Warm the imports (scipy.sparse, pydantic schemas) so the timing is the computation only.
    warm = frame.head(2000)
    evaluate(warm, label="label", candidate="candidate", baseline="baseline", segments=["region", "channel"],
             settings=settings.model_copy(update={"bootstrap": 10}), candidate_threshold=0.3,
             baseline_threshold=0.3, reference=reference.head(500), features=["amount", "tenure_days", "device"])
    detail = ""
    load_before = os.getloadavg()[0]
    with _RssSampler() as rss:
        cpu_start = time.process_time()
        start = time.perf_counter()
        if task == "report":
            result = evaluate(frame, label="label", candidate="candidate", baseline="baseline",
                              segments=["region", "channel"], settings=settings, candidate_threshold=0.3,
                              baseline_threshold=0.3, reference=reference,
                              features=["amount", "tenure_days", "device"], seed=1)
            detail = (f"gate {result.gate.status.value}; {len(result.segments)} segments; "
                      f"cells {result.settings_used['bootstrap_cells']}; "
                      f"groups {result.settings_used['bootstrap_score_groups']}")
        elif task == "points":
            out = measure_segments(frame, label="label", candidate="candidate", baseline="baseline",
                                   segments=["region", "channel"], candidate_threshold=0.3, baseline_threshold=0.3)
            detail = f"{len(out)} segments"
        else:
            detail = f"{_pandas_loop(frame, 0.3)} segment-model pairs"
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
    return {"rows": rows, "task": task, "seconds": elapsed, "cpu_seconds": cpu, "load": load_before,
            "rss_delta_mb": (rss.peak - rss.before) / 2**20,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "detail": detail}


def main() -> None:
    """Run every (rows, task) measurement in its own subprocess and print a table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--tasks", nargs="+", default=["points", "loop", "report"])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_task(args.rows[0], args.tasks[0], args.bootstrap)))
        return
    labels = {"points": "point metrics (engine)", "loop": "point metrics (pandas+sklearn loop)",
              "report": f"full report ({args.bootstrap} resamples)"}
    print(f"{'rows':>11} {'measurement':<38} {'wall s':>7} {'CPU s':>7} {'load':>5} {'+RSS MB':>8} "
          f"{'peak RSS MB':>12}  detail")
    for rows in args.rows:
        for task in args.tasks:
            proc = subprocess.run([sys.executable, __file__, "--worker", "--rows", str(rows), "--tasks", task,
                                   "--bootstrap", str(args.bootstrap)], capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{rows:>11,} {labels[task]:<38} failed: {proc.stderr.strip().splitlines()[-1:]}")
                continue
            m = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"{rows:>11,} {labels[task]:<38} {m['seconds']:>7.2f} {m['cpu_seconds']:>7.2f} {m['load']:>5.1f} "
                  f"{m['rss_delta_mb']:>8.0f} {m['peak_rss_mb']:>12.0f}  {m['detail']}", flush=True)


if __name__ == "__main__":
    main()
