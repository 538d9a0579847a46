"""The CLI: every command has --help, exits 0 on success and non-zero with one line on failure."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT, make_model, make_snapshot
from lifecycle.cli import build_parser, main


def _run(*args, db=None):
    cmd = [sys.executable, "-m", "lifecycle"] + (["--db", str(db)] if db else []) + list(args)
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


def _commands(parser, prefix=()):
    import argparse
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + (name,)
                yield from _commands(sub, prefix + (name,))


@pytest.mark.parametrize("command", sorted(set(_commands(build_parser()))), ids=" ".join)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])

    assert exc.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_ingest_and_show_round_trip(store, tmp_path, capsys):
    store.put_model(make_model())
    store.close()
    path = tmp_path / "snap.json"
    path.write_text(json.dumps(make_snapshot().record()))

    assert main(["--db", store.path, "ingest", str(path)]) == 0
    digest = capsys.readouterr().out.strip()
    assert main(["--db", store.path, "show", digest[:12]]) == 0

    shown = json.loads(capsys.readouterr().out)
    assert shown["digest"] == digest == make_snapshot().digest


def test_a_bad_file_exits_non_zero_with_one_line_naming_the_field(store, tmp_path):
    store.put_model(make_model())
    store.close()
    body = make_snapshot().record()
    body["row_count"] = "many"
    path = tmp_path / "bad.yaml"
    import yaml
    path.write_text(yaml.safe_dump(body))

    result = _run("ingest", str(path), db=store.path)

    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and "row_count" in result.stderr


def test_audit_verify_exits_zero_on_an_intact_log(store):
    store.put_model(make_model())
    store.close()

    result = _run("audit", "verify", db=store.path)

    assert result.returncode == 0 and "verified" in result.stdout


def test_a_locked_store_is_reported_with_what_to_do_instead(store, tmp_path):
    result = _run("show", "0" * 64, db=store.path)

    assert result.returncode != 0
    assert "locked by a running Seamline server" in result.stderr


def _scored_csv(path, n=6000, seed=3, labels=None):
    import numpy as np
    import pandas as pd
    rng = np.random.default_rng(seed)
    region = rng.choice(["EU", "NA", "APAC"], n)
    y = (rng.random(n) < 0.2).astype(int)
    base = np.clip(0.2 + 0.35 * y + rng.normal(0, 0.2, n), 0, 1)
    good = np.clip(0.2 + 0.45 * y + rng.normal(0, 0.2, n), 0, 1)
    cand = np.where(region == "APAC", rng.random(n), good)  # the candidate is noise in APAC
    frame = pd.DataFrame({"y": labels if labels is not None else y, "cand": cand, "base": base, "region": region,
                          "amount": rng.lognormal(3, 1, n)})
    frame.to_csv(path, index=False)
    return frame


def test_evaluate_reports_the_failing_segment_exits_1_and_is_reproducible(tmp_path):
    _scored_csv(tmp_path / "scored.csv")
    args = ["evaluate", "--scores", str(tmp_path / "scored.csv"), "--label", "y", "--candidate", "cand",
            "--baseline", "base", "--segments", "region", "--bootstrap", "200", "--seed", "5",
            "--reference", str(tmp_path / "scored.csv")]

    first = _run(*args, "--out", str(tmp_path / "a.json"))
    second = _run(*args, "--out", str(tmp_path / "b.json"))

    assert first.returncode == 1, first.stderr
    assert "gate fail" in first.stdout and "fail: region=APAC: AUC" in first.stdout
    report = json.loads((tmp_path / "a.json").read_text())
    assert {s["segment"]: s["status"] for s in report["segments"]}["region=APAC"] == "fail"
    assert report["settings_used"]["bootstrap"] == 200 and report["shift_checks"]
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()


def test_evaluate_refuses_bad_labels_and_unknown_columns_naming_them(tmp_path):
    import numpy as np
    labels = np.zeros(6000, dtype=int)
    labels[:7] = 2
    _scored_csv(tmp_path / "bad.csv", labels=labels)
    base = ["evaluate", "--scores", str(tmp_path / "bad.csv"), "--candidate", "cand", "--baseline", "base"]

    bad_label = _run(*base, "--label", "y", "--segments", "region")
    unknown = _run(*base, "--label", "y", "--segments", "country")

    assert bad_label.returncode == 2 and "'y'" in bad_label.stderr and "7 of 6 000 rows are not" in bad_label.stderr
    assert unknown.returncode == 2 and "'country'" in unknown.stderr
    assert len(bad_label.stderr.strip().splitlines()) == 1


def test_evaluate_stores_the_report_against_recorded_runs(demo_copy, tmp_path, capsys):
    from lifecycle import evaluations as ev
    from lifecycle.store import Store

    s = Store(demo_copy)
    cand, base = ev.release_pair(s, "card-fraud")
    snap = ev.reports_for(s, "card-fraud", cand, base)[0].evaluation_snapshot
    before = len(s.artifacts("card-fraud", "evaluation_report"))
    s.close()
    scored = demo_copy.parent / "demo" / "card-fraud_scored.parquet"

    code = main(["--db", str(demo_copy), "evaluate", "--scores", str(scored), "--label", "is_fraud",
                 "--candidate", "candidate_score", "--baseline", "baseline_score", "--model", "card-fraud",
                 "--bootstrap", "100", "--seed", "1", "--candidate-run", cand, "--baseline-run", base,
                 "--snapshot", snap, "--actor", "kenji@seamline.example"])

    out = capsys.readouterr().out
    assert code == 1 and "stored evaluation report" in out and "region=APAC / channel=mobile" in out
    s = Store(demo_copy)
    try:
        reports = s.artifacts("card-fraud", "evaluation_report")
        assert len(reports) == before + 1 and reports[0].created_by == "kenji@seamline.example"
        assert reports[0].settings["bootstrap"] == 100 and len(reports[0].regression_suite) == 2
    finally:
        s.close()


def test_evaluate_refuses_a_seed_out_of_range_and_a_missing_out_directory_before_computing(tmp_path):
    _scored_csv(tmp_path / "scored.csv", n=500)
    base = ["evaluate", "--scores", str(tmp_path / "scored.csv"), "--label", "y", "--candidate", "cand",
            "--baseline", "base", "--segments", "region"]

    seed = _run(*base, "--seed", "3000000000")
    out = _run(*base, "--out", str(tmp_path / "missing" / "report.json"))

    assert seed.returncode == 2 and "--seed must be between 0 and 2147483647" in seed.stderr
    assert out.returncode == 2 and "does not exist" in out.stderr and not (tmp_path / "missing").exists()
