"""The embedded demo is real and deterministic: same seed, same digests; its story is worth reviewing."""

import json
import subprocess
import sys

from conftest import ROOT
from lifecycle.store import Store


def _digests(store: Store) -> dict[str, list[str]]:
    """Every artifact kind, live-signal batches and retraining triggers included (windows aggregate in a fixed
    order on one thread, so the same log gives bit-identical windows)."""
    out: dict[str, list[str]] = {}
    for a in store.artifacts():
        out.setdefault(a.kind, []).append(a.digest)
    return {k: sorted(v) for k, v in out.items()}


def test_the_same_seed_builds_the_same_digests(demo_dir, tmp_path):
    again = tmp_path / "again" / "seamline.duckdb"

    result = subprocess.run([sys.executable, "-m", "lifecycle", "--db", str(again), "demo"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)

    assert result.returncode == 0, result.stderr[-2000:]
    first, second = Store(demo_dir / "seamline.duckdb"), Store(again)
    assert _digests(first) == _digests(second)
    assert json.loads(result.stdout)["fraud_candidate"] in _digests(first)["registry_entry"]


def test_the_demo_holds_every_artifact_kind_for_two_models(demo_store):
    counts = demo_store.artifact_counts_frame()

    kinds = set(counts["kind"])
    assert kinds == {"dataset_snapshot", "training_run", "evaluation_report", "registry_entry", "rollout_note",
                     "monitoring_signals", "retraining_trigger"}
    assert set(counts["model"]) == {"card-fraud", "churn"}


def test_the_candidate_is_better_overall_but_regresses_in_a_segment(demo_store):
    report = next(r for r in demo_store.artifacts("card-fraud", "evaluation_report"))

    assert report.overall.candidate.roc_auc > report.overall.baseline.roc_auc
    failing = [s for s in report.segments if s.status == "fail"]
    assert [s.segment for s in failing] == ["region=APAC / channel=mobile"]
    assert report.gate.status == "fail"


def test_the_snapshot_is_at_least_200k_rows_with_a_maturing_label(demo_store):
    snapshots = demo_store.artifacts("card-fraud", "dataset_snapshot")

    assert sum(s.row_count for s in snapshots) >= 200_000
    assert all(s.label.delay_days == 30 for s in snapshots)
    assert len(snapshots[0].features) >= 12


def test_the_churn_canary_was_halted_by_a_stop_rule_with_the_fallback_serving(demo_store):
    release = demo_store.release("churn-v2")
    note = demo_store.artifact(release.rollout_note)

    assert release.state == "halted"
    assert release.serving == note.fallback.serving
    incidents = [e for e in demo_store.audit_events("churn-v2") if e.action == "incident.open"]
    assert incidents and "fallback rate" in incidents[0].detail["reason"]


def test_the_demo_audit_log_verifies(demo_store):
    ok, reason = demo_store.verify_audit()

    assert ok, reason
