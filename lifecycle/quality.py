"""Run a dataset snapshot's quality checks over its Parquet or CSV files with DuckDB SQL."""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from .models import (
    CheckResult,
    CheckStatus,
    FeatureDefinition,
    LabelDefinition,
    PointInTime,
    QualityThresholds,
)

log = logging.getLogger(__name__)

CHECK_NAMES = ("schema", "null_rate", "duplicate_keys", "freshness", "label_maturity", "leakage")
SAMPLE_ROWS = 5
PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".tsv", ".csv.gz", ".tsv.gz")

INT_TYPES = frozenset({"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT",
                       "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"})
FLOAT_TYPES = frozenset({"FLOAT", "DOUBLE", "DECIMAL"})
NUMERIC_TYPES = INT_TYPES | FLOAT_TYPES
TEMPORAL_TYPES = frozenset({"TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS",
                            "TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ_NS", "DATE"})
# Which DuckDB base types satisfy each declared feature dtype. Integers may stand in for floats and
# for coded categories; nothing stands in for a timestamp but a temporal type.
COMPATIBLE_TYPES: dict[str, frozenset[str]] = {
    "int": INT_TYPES,
    "float": FLOAT_TYPES | INT_TYPES,
    "bool": frozenset({"BOOLEAN"}),
    "category": frozenset({"VARCHAR", "ENUM", "BOOLEAN"}) | INT_TYPES,
    "string": frozenset({"VARCHAR", "ENUM"}),
    "timestamp": TEMPORAL_TYPES,
}
_MAX_ERROR_CHARS = 1000


class DataFileError(ValueError):
    """A data file that cannot be found, recognised or read."""


def quote_ident(name: str) -> str:
    """Return name as a DuckDB quoted identifier, refusing names that cannot be a column."""
    if not isinstance(name, str) or not name or len(name) > 255 or any(ord(c) < 32 for c in name):
        raise ValueError(f"invalid column name {name!r}")
    return '"' + name.replace('"', '""') + '"'


def base_type(dtype: str) -> str:
    """Return a DuckDB type name without its parameters, e.g. DECIMAL(18,3) -> DECIMAL."""
    return dtype.split("(", 1)[0].strip().upper()


def data_format(paths: Sequence[Path]) -> str:
    """Return 'parquet' or 'csv' for a list of data files of one format, or raise DataFileError."""
    if not paths:
        raise DataFileError("no data files given")
    formats = set()
    for p in paths:
        name = p.name.lower()
        if name.endswith(PARQUET_SUFFIXES):
            formats.add("parquet")
        elif name.endswith(CSV_SUFFIXES):
            formats.add("csv")
        else:
            raise DataFileError(f"data file '{p.name}' is neither Parquet (.parquet) nor CSV (.csv)")
    if len(formats) > 1:
        raise DataFileError("data files mix Parquet and CSV; a snapshot's files share one format")
    return formats.pop()


@dataclass
class LoadedData:
    """Data files opened in DuckDB as one relation, with their column names and DuckDB types."""

    con: duckdb.DuckDBPyConnection
    files: list[Path]
    relation: str
    columns: dict[str, str]

    def row_count(self) -> int:
        """Count the rows of the data."""
        return self.con.execute(f"SELECT count(*) FROM {self.relation}").fetchone()[0]

    def close(self) -> None:
        """Close the DuckDB connection."""
        self.con.close()

    def __enter__(self) -> "LoadedData":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect() -> duckdb.DuckDBPyConnection:
    """Open an in-memory DuckDB connection that reads naive timestamps as UTC."""
    con = duckdb.connect(":memory:")
    # Naive timestamps are UTC by convention; fixing the session zone makes TIMESTAMP <-> TIMESTAMPTZ
    # casts independent of the machine's locale.
    con.execute("SET TimeZone = 'UTC'")
    return con


def load_data(paths: Path | str | Sequence[Path | str]) -> LoadedData:
    """Open Parquet or CSV file(s) as one DuckDB relation; raise DataFileError when unreadable."""
    files = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    fmt = data_format(files)
    for p in files:
        # DuckDB expands glob characters in file names, which would silently read other files.
        if any(c in str(p) for c in "*?[]{}"):
            raise DataFileError(f"data file path '{p}' contains glob characters")
        if not p.is_file():
            raise DataFileError(f"data file '{p}' does not exist")
    con = connect()
    try:
        names = [str(p) for p in files]
        if fmt == "parquet":
            # Parquet is columnar: a view lets each check read only the columns it needs.
            con.read_parquet(names).create_view("snapshot_data")
        else:
            # CSV has to be parsed as a whole; parse it once into a table instead of once per check.
            con.read_csv(names).create_view("snapshot_csv")
            con.execute("CREATE TEMP TABLE snapshot_data AS SELECT * FROM snapshot_csv")
        columns = {row[0]: row[1] for row in con.execute("DESCRIBE snapshot_data").fetchall()}
    except duckdb.Error as err:
        con.close()
        raise DataFileError(f"cannot read {', '.join(p.name for p in files)}: {_error_text(err)}") from err
    return LoadedData(con=con, files=files, relation="snapshot_data", columns=columns)


def run_quality_checks(
    path_or_paths: Path | str | Sequence[Path | str] | LoadedData,
    *,
    features: Sequence[FeatureDefinition],
    label: LabelDefinition,
    point_in_time: PointInTime,
    key_columns: Sequence[str],
    thresholds: QualityThresholds,
    now: datetime,
) -> list[CheckResult]:
    """Run the six quality checks over the data and return one CheckResult per check."""
    spec = _Spec(features=list(features), label=label, pit=point_in_time, keys=list(key_columns),
                 thresholds=thresholds, now=now)
    if isinstance(path_or_paths, LoadedData):
        return _run_all(path_or_paths, spec)
    try:
        data = load_data(path_or_paths)
    except DataFileError as err:
        return [CheckResult(name=name, status=CheckStatus.FAIL, reason=f"Unreadable data: {err}")
                for name in CHECK_NAMES]
    with data:
        return _run_all(data, spec)


# ---------------------------------------------------------------- internals


@dataclass(frozen=True)
class _Spec:
    features: list[FeatureDefinition]
    label: LabelDefinition
    pit: PointInTime
    keys: list[str]
    thresholds: QualityThresholds
    now: datetime


def _run_all(data: LoadedData, spec: _Spec) -> list[CheckResult]:
    checks: list[tuple[str, Callable[[LoadedData, _Spec], CheckResult]]] = [
        ("schema", _check_schema), ("null_rate", _check_null_rate), ("duplicate_keys", _check_duplicate_keys),
        ("freshness", _check_freshness), ("label_maturity", _check_label_maturity), ("leakage", _check_leakage),
    ]
    results = []
    for name, check in checks:
        started = time.perf_counter()
        try:
            result = check(data, spec)
        except duckdb.Error as err:
            # A file can be readable at open time and still fail mid-scan (a corrupt page, a CSV
            # value that breaks the sniffed type); that is a failed check, not a crash.
            result = CheckResult(name=name, status=CheckStatus.FAIL,
                                 reason=f"Unreadable data while checking: {_error_text(err)}")
        seconds = time.perf_counter() - started
        log.debug("quality check %s took %.3f s", name, seconds, extra={"check": name, "seconds": seconds})
        results.append(result)
    return results


def _check_schema(data: LoadedData, spec: _Spec) -> CheckResult:
    cols = data.columns
    problems: list[str] = []
    feature_rows = []
    for f in spec.features:
        actual = cols.get(f.name)
        ok = actual is not None and base_type(actual) in COMPATIBLE_TYPES[f.dtype]
        feature_rows.append({"name": f.name, "declared": f.dtype, "actual": actual, "compatible": ok})
        if actual is None:
            problems.append(f"feature '{f.name}' is missing")
        elif not ok:
            problems.append(f"feature '{f.name}' is declared {f.dtype} but the file has {actual}")
    roles = [("label column", spec.label.column), *(("key column", k) for k in spec.keys)]
    for role, name in roles:
        if name not in cols:
            problems.append(f"{role} '{name}' is missing")
    for role, name in _time_columns(spec.pit):
        if name not in cols:
            problems.append(f"{role} '{name}' is missing")
        elif base_type(cols[name]) not in TEMPORAL_TYPES:
            problems.append(f"{role} '{name}' has type {cols[name]}, not a timestamp")
    declared = {f.name for f in spec.features} | {spec.label.column, *spec.keys}
    declared |= {n for _, n in _time_columns(spec.pit)}
    evidence = {
        "columns": dict(cols),
        "features": feature_rows,
        "problems": problems,
        "undeclared_columns": [c for c in cols if c not in declared],
    }
    if problems:
        return CheckResult(name="schema", status=CheckStatus.FAIL,
                           reason=f"{len(problems)} schema problem(s): " + "; ".join(problems), evidence=evidence)
    return CheckResult(name="schema", status=CheckStatus.PASS,
                       reason=f"All {len(spec.features)} declared features exist with compatible types",
                       evidence=evidence)


def _check_null_rate(data: LoadedData, spec: _Spec) -> CheckResult:
    th = spec.thresholds
    thresholds: dict[str, Any] = {"max_null_rate": th.max_null_rate}
    thresholds.update({f"max_null_rate[{c}]": v for c, v in sorted(th.null_rate_overrides.items())})
    names = list(data.columns)
    # One scan counts the non-null values of every column at once.
    selects = ["count(*)"] + [f"count({quote_ident(c)})" for c in names]
    params: list[Any] = []
    label, et = spec.label.column, spec.pit.event_time_column
    # A label is legitimately missing until its delay has passed, so the label column is judged only over
    # rows whose label is due (event_time <= as_of - delay); everything else over all rows.
    label_due = label in data.columns and not _time_column_problem(data, "event_time_column", et)
    if label_due:
        mature_before = _utc(spec.pit.as_of) - timedelta(days=spec.label.delay_days)
        col, param = _time_sql(et, data.columns[et])
        selects += [f"count(*) FILTER (WHERE {col} <= {param})",
                    f"count({quote_ident(label)}) FILTER (WHERE {col} <= {param})"]
        params += [mature_before, mature_before]
    row = data.con.execute(f"SELECT {', '.join(selects)} FROM {data.relation}", params).fetchone()
    n = row[0]
    unknown = sorted(set(th.null_rate_overrides) - set(names))
    if n == 0:
        return CheckResult(name="null_rate", status=CheckStatus.INCONCLUSIVE, reason="The data has no rows",
                           evidence={"rows": 0}, thresholds=thresholds)
    null_counts = {c: n - nonnull for c, nonnull in zip(names, row[1:len(names) + 1])}
    rates = {c: null_counts[c] / n for c in names}
    judged = dict(rates)
    evidence: dict[str, Any] = {"rows": n, "null_counts": null_counts, "rates": rates}
    if label_due:
        due, labelled = row[len(names) + 1:]
        judged[label] = (due - labelled) / due if due else 0.0
        evidence["label"] = {"column": label, "due_rows": due, "missing_when_due": due - labelled,
                             "rate_when_due": judged[label], "due_for_events_until": mature_before.isoformat()}
    failing = [{"column": c, "rate": judged[c], "allowed": th.null_rate_overrides.get(c, th.max_null_rate)}
               for c in names if judged[c] > th.null_rate_overrides.get(c, th.max_null_rate)]
    evidence.update(failing=failing, unknown_override_columns=unknown)
    if failing:
        worst = ", ".join(f"'{f['column']}' {f['rate']:.2%} > {f['allowed']:.2%}"
                          + (" (among rows whose label is due)" if label_due and f["column"] == label else "")
                          for f in failing)
        return CheckResult(name="null_rate", status=CheckStatus.FAIL,
                           reason=f"{len(failing)} column(s) above their null-rate threshold: {worst}",
                           evidence=evidence, thresholds=thresholds)
    if unknown:
        return CheckResult(name="null_rate", status=CheckStatus.WARN,
                           reason="Null rates within thresholds, but overrides name columns not in the data: "
                                  + ", ".join(unknown), evidence=evidence, thresholds=thresholds)
    top = max(names, key=lambda c: judged[c])
    return CheckResult(name="null_rate", status=CheckStatus.PASS,
                       reason=f"All {len(names)} columns within their null-rate thresholds "
                              f"(highest '{top}' {judged[top]:.2%})",
                       evidence=evidence, thresholds=thresholds)


def _check_duplicate_keys(data: LoadedData, spec: _Spec) -> CheckResult:
    thresholds = {"max_duplicate_keys": spec.thresholds.max_duplicate_keys}
    if not spec.keys:
        return CheckResult(name="duplicate_keys", status=CheckStatus.INCONCLUSIVE,
                           reason="No key columns declared; duplicates cannot be checked", thresholds=thresholds)
    missing = [k for k in spec.keys if k not in data.columns]
    if missing:
        return _missing("duplicate_keys", missing, thresholds)
    keys = ", ".join(quote_ident(k) for k in spec.keys)
    # Rows with a null key part are reported by the null-rate check; they are not duplicates of each other.
    not_null = " AND ".join(f"{quote_ident(k)} IS NOT NULL" for k in spec.keys)
    con = data.con
    null_key_rows = con.execute(f"SELECT count(*) FILTER (WHERE NOT ({not_null})) FROM {data.relation}").fetchone()[0]
    # The one expensive step is grouping every row by its key; keep only the duplicated groups (few, normally)
    # so the counts and the sample are read from them without grouping again.
    count_col = "n"
    while count_col in spec.keys:  # a key column may itself be called "n"
        count_col = "_" + count_col
    n = quote_ident(count_col)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE quality_duplicate_keys AS
        SELECT {keys}, count(*) AS {n} FROM {data.relation} WHERE {not_null} GROUP BY {keys} HAVING count(*) > 1
    """)
    try:
        dup_keys, dup_rows = con.execute(
            f"SELECT count(*), coalesce(sum({n} - 1), 0) FROM quality_duplicate_keys").fetchone()
        sample = _rows(con.execute(
            f"SELECT {keys}, {n} FROM quality_duplicate_keys ORDER BY {n} DESC, {keys} LIMIT {SAMPLE_ROWS}"))
    finally:
        con.execute("DROP TABLE IF EXISTS quality_duplicate_keys")
    evidence: dict[str, Any] = {"key_columns": spec.keys, "duplicated_keys": dup_keys, "duplicate_rows": dup_rows,
                                "rows_sharing_a_key": dup_keys + dup_rows, "rows_with_null_key": null_key_rows}
    if dup_keys:
        evidence["sample"] = sample
    allowed = spec.thresholds.max_duplicate_keys
    what = f"{dup_rows} duplicate row(s) over {dup_keys} key(s) of ({', '.join(spec.keys)})"
    if dup_rows > allowed:
        return CheckResult(name="duplicate_keys", status=CheckStatus.FAIL, reason=f"{what}; allowed {allowed}",
                           evidence=evidence, thresholds=thresholds)
    return CheckResult(name="duplicate_keys", status=CheckStatus.PASS, reason=f"{what}; allowed {allowed}",
                       evidence=evidence, thresholds=thresholds)


def _check_freshness(data: LoadedData, spec: _Spec) -> CheckResult:
    pit, th = spec.pit, spec.thresholds
    as_of, now = _utc(pit.as_of), _utc(spec.now)
    thresholds = {"max_refresh_lag_hours": th.max_refresh_lag_hours, "as_of": as_of.isoformat()}
    et = pit.event_time_column
    problem = _time_column_problem(data, "event_time_column", et)
    if problem:
        return CheckResult(name="freshness", status=CheckStatus.INCONCLUSIVE, reason=problem, thresholds=thresholds)
    col, param = _time_sql(et, data.columns[et])
    newest, oldest, stamped, after = data.con.execute(f"""
        SELECT CAST(max({col}) AS TIMESTAMP), CAST(min({col}) AS TIMESTAMP), count({col}),
               count(*) FILTER (WHERE {col} > {param})
        FROM {data.relation}
    """, [as_of]).fetchone()
    evidence: dict[str, Any] = {"event_time_column": et, "newest_event": _iso(newest), "oldest_event": _iso(oldest),
                                "rows_with_event_time": stamped, "rows_after_as_of": after,
                                "checked_at": now.isoformat()}
    if newest is None:
        return CheckResult(name="freshness", status=CheckStatus.FAIL, reason=f"No '{et}' values in the data",
                           evidence=evidence, thresholds=thresholds)
    lag = (as_of - newest).total_seconds() / 3600
    evidence["lag_hours"] = lag
    allowed = th.max_refresh_lag_hours
    if as_of > now:
        reason, status = f"as_of {as_of.isoformat()} is after the check time {now.isoformat()}", CheckStatus.FAIL
    elif after:
        reason = f"{after} row(s) have '{et}' after as_of {as_of.isoformat()} (newest {newest.isoformat()})"
        status = CheckStatus.FAIL
    elif lag > allowed:
        reason = (f"Newest event {newest.isoformat()} is {lag:.1f} h before as_of {as_of.isoformat()}; "
                  f"allowed {allowed:g} h")
        status = CheckStatus.FAIL
    else:
        reason = f"Newest event is {lag:.1f} h before as_of (allowed {allowed:g} h)"
        status = CheckStatus.PASS
    return CheckResult(name="freshness", status=status, reason=reason, evidence=evidence, thresholds=thresholds)


def _check_label_maturity(data: LoadedData, spec: _Spec) -> CheckResult:
    pit, label = spec.pit, spec.label
    as_of = _utc(pit.as_of)
    # event_time + delay > as_of  <=>  event_time > as_of - delay: compare the column with a constant.
    mature_before = as_of - timedelta(days=label.delay_days)
    start, end = _utc(pit.label_window_start), _utc(pit.label_window_end)
    thresholds = {"delay_days": label.delay_days, "as_of": as_of.isoformat(),
                  "label_window_start": start.isoformat(), "label_window_end": end.isoformat()}
    et = pit.event_time_column
    problem = _time_column_problem(data, "event_time_column", et)
    if label.column not in data.columns:
        return _missing("label_maturity", [label.column], thresholds)
    if problem:
        return CheckResult(name="label_maturity", status=CheckStatus.INCONCLUSIVE, reason=problem,
                           thresholds=thresholds)
    col, param = _time_sql(et, data.columns[et])
    lab = quote_ident(label.column)
    immature_where = f"{lab} IS NOT NULL AND {col} > {param}"
    labelled, immature, outside = data.con.execute(f"""
        SELECT count({lab}),
               count(*) FILTER (WHERE {immature_where}),
               count(*) FILTER (WHERE {lab} IS NOT NULL AND ({col} < {param} OR {col} > {param}))
        FROM {data.relation}
    """, [mature_before, start, end]).fetchone()
    evidence: dict[str, Any] = {"label_column": label.column, "labelled_rows": labelled, "immature_rows": immature,
                                "labels_mature_for_events_until": mature_before.isoformat(),
                                "labelled_rows_outside_window": outside}
    if immature:
        evidence["sample"] = _sample(data, spec, immature_where, [mature_before], [label.column])
        return CheckResult(
            name="label_maturity", status=CheckStatus.FAIL,
            reason=(f"{immature} labelled row(s) have '{et}' after {mature_before.isoformat()}: their label "
                    f"({label.delay_days} d delay) could not be known at as_of {as_of.isoformat()}"),
            evidence=evidence, thresholds=thresholds)
    if outside:
        return CheckResult(name="label_maturity", status=CheckStatus.WARN,
                           reason=f"All labels are mature, but {outside} labelled row(s) fall outside the label "
                                  f"window {start.isoformat()} .. {end.isoformat()}",
                           evidence=evidence, thresholds=thresholds)
    return CheckResult(name="label_maturity", status=CheckStatus.PASS,
                       reason=f"All {labelled} labels are mature ({label.delay_days} d delay before as_of)",
                       evidence=evidence, thresholds=thresholds)


def _check_leakage(data: LoadedData, spec: _Spec) -> CheckResult:
    pit = spec.pit
    cutoff = _utc(pit.feature_cutoff)
    thresholds = {"max_leaking_rows": spec.thresholds.max_leaking_rows, "feature_cutoff": cutoff.isoformat()}
    ft, et = pit.feature_time_column, pit.event_time_column
    if ft is None:
        return CheckResult(name="leakage", status=CheckStatus.INCONCLUSIVE,
                           reason="No feature_time_column declared; point-in-time leakage cannot be checked",
                           thresholds=thresholds)
    problem = (_time_column_problem(data, "feature_time_column", ft)
               or _time_column_problem(data, "event_time_column", et))
    if problem:
        return CheckResult(name="leakage", status=CheckStatus.INCONCLUSIVE, reason=problem, thresholds=thresholds)
    fcol, fparam = _time_sql(ft, data.columns[ft])
    ecol, _ = _time_sql(et, data.columns[et])
    leak_where = f"({fcol} > {ecol} OR {fcol} > {fparam})"
    leaking, after_event, after_cutoff, stamped = data.con.execute(f"""
        SELECT count(*) FILTER (WHERE {leak_where}),
               count(*) FILTER (WHERE {fcol} > {ecol}),
               count(*) FILTER (WHERE {fcol} > {fparam}),
               count({fcol})
        FROM {data.relation}
    """, [cutoff, cutoff]).fetchone()
    evidence: dict[str, Any] = {"feature_time_column": ft, "event_time_column": et, "leaking_rows": leaking,
                                "after_event_time": after_event, "after_feature_cutoff": after_cutoff,
                                "rows_with_feature_time": stamped}
    if leaking:
        evidence["sample"] = _sample(data, spec, leak_where, [cutoff], [])
    allowed = spec.thresholds.max_leaking_rows
    what = (f"{leaking} row(s) have '{ft}' after their '{et}' ({after_event}) or after the feature cutoff "
            f"{cutoff.isoformat()} ({after_cutoff}); allowed {allowed}")
    status = CheckStatus.FAIL if leaking > allowed else CheckStatus.PASS
    return CheckResult(name="leakage", status=status, reason=what, evidence=evidence, thresholds=thresholds)


def _sample(data: LoadedData, spec: _Spec, where: str, params: list[Any], extra: list[str]) -> list[dict[str, Any]]:
    """Return up to SAMPLE_ROWS offending rows (keys, times, extras), ordered so the sample is reproducible."""
    wanted = [*spec.keys, spec.pit.event_time_column, spec.pit.feature_time_column, *extra]
    cols = [c for c in dict.fromkeys(w for w in wanted if w) if c in data.columns]
    exprs = []
    for c in cols:
        q = quote_ident(c)
        # Cast times to naive UTC so the sample is the same whatever zone the file was written in.
        exprs.append(f"CAST({q} AS TIMESTAMP) AS {q}" if base_type(data.columns[c]) in TEMPORAL_TYPES else q)
    order = ", ".join(quote_ident(c) for c in cols)
    cur = data.con.execute(
        f"SELECT {', '.join(exprs)} FROM {data.relation} WHERE {where} ORDER BY {order} LIMIT {SAMPLE_ROWS}", params)
    return _rows(cur)


def _rows(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description]
    return [{n: json_safe(v) for n, v in zip(names, row)} for row in cur.fetchall()]


def _time_columns(pit: PointInTime) -> list[tuple[str, str]]:
    out = [("event_time_column", pit.event_time_column)]
    if pit.feature_time_column:
        out.append(("feature_time_column", pit.feature_time_column))
    return out


def _time_column_problem(data: LoadedData, role: str, name: str) -> str | None:
    if name not in data.columns:
        return f"Cannot check: {role} '{name}' is not in the data"
    if base_type(data.columns[name]) not in TEMPORAL_TYPES:
        return f"Cannot check: {role} '{name}' has type {data.columns[name]}, not a timestamp"
    return None


def _time_sql(name: str, dtype: str) -> tuple[str, str]:
    """Return (column expression, parameter placeholder) that compare a time column with a UTC datetime."""
    q = quote_ident(name)
    kind = base_type(dtype)
    if kind in ("TIMESTAMP", "TIMESTAMP_NS", "TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ_NS"):
        # Cast the constant, not the column, so the scan compares raw values.
        return q, f"CAST(? AS {kind})"
    return f"CAST({q} AS TIMESTAMP)", "CAST(? AS TIMESTAMP)"


def _missing(name: str, columns: list[str], thresholds: dict[str, Any]) -> CheckResult:
    return CheckResult(name=name, status=CheckStatus.INCONCLUSIVE,
                       reason="Cannot check: column(s) not in the data: " + ", ".join(f"'{c}'" for c in columns),
                       thresholds=thresholds)


def _utc(t: datetime) -> datetime:
    """Return t as a naive UTC datetime; naive input is taken to be UTC already."""
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo else t


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


def _error_text(err: Exception) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"


def json_safe(value: Any) -> Any:
    """Return value converted to plain JSON types (ISO strings for times, None for NaN)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return float(value) if value.is_finite() else None
    if isinstance(value, datetime):
        return _utc(value).isoformat()
    if isinstance(value, (date, dtime)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    return str(value)
