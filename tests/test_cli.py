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
