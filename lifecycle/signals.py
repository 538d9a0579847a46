"""Turn prediction logs into signal windows, keep an idempotent log store, and estimate A/B effects."""

from __future__ import annotations

import math
import os
import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timezone
from pathlib import Path
from typing import Any, Literal, NamedTuple

import duckdb
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict
from scipy import stats

from lifecycle.models import SIGNAL_METRICS, CheckStatus, SignalWindow, Stage, SuccessMetric

STAGES = tuple(s.value for s in Stage)
ARMS = ("shadow", "canary", "treatment", "control", "baseline")

PREDICTION_LOG_COLUMNS: dict[str, str] = {
    "request_id": "text, unique per request",
    "timestamp": "timestamp (UTC when naive) or ISO 8601 text",
    "release": "text",
    "stage": "one of " + ", ".join(STAGES),
    "arm": "one of " + ", ".join(ARMS),
    "segment": "text, e.g. 'region=EU'; 'all' is reserved for the roll-up",
    "latency_ms": "number >= 0",
    "error": "bool or 0/1",
    "fallback": "bool or 0/1",
    "cost": "number >= 0, currency per request",
    "candidate_score": "number in [0, 1]",
    "baseline_score": "number in [0, 1]",
    "decision": "0/1, the decision of the model under test on this arm (served, or shadow-only)",
    "baseline_decision": "0/1, the baseline's decision for the same request",
}
OPTIONAL_LOG_COLUMNS: dict[str, str] = {"label": "0/1 or null until the outcome is known"}

WINDOW_COLUMNS = (
    "release", "stage", "arm", "segment", "start", "end", "requests", "latency_p50_ms", "latency_p95_ms",
    "latency_p99_ms", "error_rate", "fallback_rate", "cost_per_1k", "disagreement_rate", "labelled",
    "precision", "recall", "positive_rate", "calibration_gap",
)

LOG_TABLE = "prediction_log"
LOG_TABLE_DDL = f"""
CREATE TABLE IF NOT EXISTS {LOG_TABLE} (
    request_id VARCHAR PRIMARY KEY,
    timestamp TIMESTAMP NOT NULL,
    release VARCHAR NOT NULL,
    stage VARCHAR NOT NULL CHECK (stage IN ({", ".join(f"'{s}'" for s in STAGES)})),
    arm VARCHAR NOT NULL CHECK (arm IN ({", ".join(f"'{a}'" for a in ARMS)})),
    segment VARCHAR NOT NULL,
    latency_ms DOUBLE NOT NULL CHECK (latency_ms >= 0),
    error BOOLEAN NOT NULL,
    fallback BOOLEAN NOT NULL,
    cost DOUBLE NOT NULL CHECK (cost >= 0),
    candidate_score DOUBLE NOT NULL CHECK (candidate_score BETWEEN 0 AND 1),
    baseline_score DOUBLE NOT NULL CHECK (baseline_score BETWEEN 0 AND 1),
    decision TINYINT NOT NULL CHECK (decision IN (0, 1)),
    baseline_decision TINYINT NOT NULL CHECK (baseline_decision IN (0, 1)),
    label TINYINT CHECK (label IN (0, 1))
)
"""

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_FILE_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "csv", ".gz": "csv"}
_NUMERIC_TYPES = re.compile(
    r"^(BOOLEAN|TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|UHUGEINT|"
    r"FLOAT|DOUBLE|DECIMAL.*)$"
)
_FLAG_COLUMNS = ("error", "fallback", "decision", "baseline_decision")
_NUMBER_COLUMNS = ("latency_ms", "cost", "candidate_score", "baseline_score")
_TEXT_COLUMNS = ("request_id", "release", "stage", "arm", "segment")
# Rates whose denominator is the window's request count: their A/B effect is a difference of proportions.
REQUEST_RATES = ("error_rate", "fallback_rate", "disagreement_rate", "positive_rate")
MAX_WINDOW_MINUTES = 7 * 24 * 60


class SignalInputError(ValueError):
    """A prediction log or label file that cannot be used; names each column and how many rows are affected."""

    def __init__(self, problems: Sequence[tuple[str, int, str]]):
        self.problems = list(problems)
        self.column, self.rows, _ = self.problems[0]
        super().__init__("; ".join(f"{column}: {detail}" for column, _, detail in self.problems))


class IngestCount(NamedTuple):
    inserted: int
    duplicates: int


class Effect(BaseModel):
    """An A/B effect of one success metric: treatment minus control with its confidence interval."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    metric: str
    method: Literal["difference of proportions", "welch", "none"]
    unit: Literal["requests", "windows"]
    treatment: float | None
    control: float | None
    difference: float | None
    low: float | None
    high: float | None
    confidence: float
    n_treatment: int
    n_control: int
    comparator: str | None = None
    target: float | None = None
    status: CheckStatus
    reason: str


# ---------------------------------------------------------------- sources and validation


@contextmanager
def _opened(con: duckdb.DuckDBPyConnection, source: Any) -> Iterator[str]:
    """Yield a quoted relation name for a DataFrame, a Parquet/CSV path or an existing table name."""
    if isinstance(source, pd.DataFrame):
        # DuckDB guesses an object column's type from its first values and fails opaquely on a mixed one;
        # as text every value reaches the validation below, which counts the bad ones per column.
        mixed = [c for c in source.columns if source[c].dtype == object]
        if mixed:
            source = source.assign(**{c: source[c].astype("string") for c in mixed})
        name = f"_seamline_src_{uuid.uuid4().hex}"
        con.register(name, source)
        try:
            yield f'"{name}"'
        finally:
            con.unregister(name)
        return
    if not isinstance(source, (str, os.PathLike)):
        kind = type(source).__name__
        raise SignalInputError([("source", 0, f"expected a DataFrame, a file path or a table name, got {kind}")])
    text = os.fspath(source)
    if isinstance(source, str) and _IDENTIFIER.match(text) and not os.path.exists(text):
        found = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = $name", {"name": text}
        ).fetchall()[0][0]
        if not found:
            raise SignalInputError([("source", 0, f"no table named '{text}' and no such file")])
        yield f'"{text}"'
        return
    suffix = Path(text).suffix.lower()
    kind = _FILE_SUFFIXES.get(suffix)
    if kind is None:
        raise SignalInputError([("source", 0, f"'{Path(text).name}' is not a .parquet or .csv file")])
    if not any(ch in text for ch in "*?[") and not os.path.exists(text):
        raise SignalInputError([("source", 0, f"file not found: {text}")])
    name = f"_seamline_src_{uuid.uuid4().hex}"
    try:
        relation = con.read_parquet(text) if kind == "parquet" else con.read_csv(text)
    except duckdb.Error as exc:
        raise SignalInputError([("source", 0, f"cannot read {Path(text).name}: {exc}")]) from exc
    if kind == "parquet":
        con.register(name, relation)
        try:
            yield f'"{name}"'
        finally:
            con.unregister(name)
        return
    # A CSV is materialised as a temp table: casts on a CSV scan are pushed into the reader and raise
    # instead of TRY_CAST returning null, which would turn a countable bad value into an opaque error.
    view = f"{name}_csv"
    con.register(view, relation)
    try:
        con.execute(f'CREATE TEMP TABLE "{name}" AS SELECT * FROM "{view}"')
    except duckdb.Error as exc:
        raise SignalInputError([("source", 0, f"cannot read {Path(text).name}: {exc}")]) from exc
    finally:
        con.unregister(view)
    try:
        yield f'"{name}"'
    finally:
        con.execute(f'DROP TABLE IF EXISTS temp."{name}"')


def _column_types(con: duckdb.DuckDBPyConnection, relation: str) -> dict[str, str]:
    rows = con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()
    return {row[0]: row[1] for row in rows}


def _timestamp_sql(column_type: str) -> str:
    """Return SQL that reads `timestamp` as a naive UTC TIMESTAMP."""
    if column_type == "TIMESTAMP WITH TIME ZONE":
        return "timezone('UTC', \"timestamp\")"
    if column_type.startswith("TIMESTAMP") or column_type == "DATE":
        return 'CAST("timestamp" AS TIMESTAMP)'
    # Text: an explicit offset is honoured, a naive value is taken as UTC (never the session time zone).
    return (
        "CASE WHEN regexp_matches(\"timestamp\", '(Z|[+-][0-9]{2}(:?[0-9]{2})?)$') "
        "THEN timezone('UTC', TRY_CAST(\"timestamp\" AS TIMESTAMPTZ)) "
        'ELSE TRY_CAST("timestamp" AS TIMESTAMP) END'
    )


def _number_sql(column: str, column_type: str, flag: bool) -> str:
    if _NUMERIC_TYPES.match(column_type):
        return f'CAST("{column}" AS DOUBLE)'
    if flag:
        return (f"CASE lower(trim(\"{column}\")) WHEN 'true' THEN 1.0 WHEN 'false' THEN 0.0 "
                f'ELSE TRY_CAST("{column}" AS DOUBLE) END')
    return f'TRY_CAST("{column}" AS DOUBLE)'


def _projection(types: dict[str, str]) -> str:
    """Return the SELECT list that normalises a log to one schema: text, naive UTC ts, doubles for numbers."""
    parts = [f'CAST("{c}" AS VARCHAR) AS "{c}"' for c in _TEXT_COLUMNS]
    parts.append(f"{_timestamp_sql(types['timestamp'])} AS ts")
    parts += [f'{_number_sql(c, types[c], flag=False)} AS "{c}"' for c in _NUMBER_COLUMNS]
    parts += [f'{_number_sql(c, types[c], flag=True)} AS "{c}"' for c in _FLAG_COLUMNS]
    if "label" in types:
        label = _number_sql("label", types["label"], flag=True)
        parts.append(f'{label} AS label, "label" IS NOT NULL AS label_given')
    else:
        parts.append("CAST(NULL AS DOUBLE) AS label, false AS label_given")
    return ", ".join(parts)


def _schema_problems(types: dict[str, str]) -> list[tuple[str, str]]:
    """Return (column, detail) for every missing column or column of an unusable type."""
    problems = [(c, f"required column is missing ({PREDICTION_LOG_COLUMNS[c]})")
                for c in PREDICTION_LOG_COLUMNS if c not in types]
    for column in (*_NUMBER_COLUMNS, *_FLAG_COLUMNS, *(("label",) if "label" in types else ())):
        if column in types and not (_NUMERIC_TYPES.match(types[column]) or types[column] == "VARCHAR"):
            expected = PREDICTION_LOG_COLUMNS.get(column, OPTIONAL_LOG_COLUMNS.get(column))
            problems.append((column, f"has type {types[column]}; expected {expected}"))
    ts_type = types.get("timestamp")
    if ts_type and not (ts_type.startswith("TIMESTAMP") or ts_type in ("DATE", "VARCHAR")):
        problems.append(("timestamp", f"has type {ts_type}; expected a timestamp or ISO 8601 text"))
    return problems


# (column, SQL condition that marks a bad row, readable description); request_id only matters when storing.
_ROW_CHECKS: tuple[tuple[str, str, str], ...] = (
    ("timestamp", "ts IS NULL OR ts < TIMESTAMP '1970-01-01'", "missing, not a timestamp or before 1970"),
    ("release", "release IS NULL OR release = ''", "missing"),
    ("stage", f"stage IS NULL OR stage NOT IN ({', '.join(repr(s) for s in STAGES)})", "unknown stage"),
    ("arm", f"arm IS NULL OR arm NOT IN ({', '.join(repr(a) for a in ARMS)})", "unknown arm"),
    ("segment", "segment IS NULL OR segment = '' OR segment = 'all'", "missing or the reserved name 'all'"),
    ("latency_ms", "latency_ms IS NULL OR isnan(latency_ms) OR latency_ms < 0 OR isinf(latency_ms)",
     "missing, negative or not a number"),
    ("cost", "cost IS NULL OR isnan(cost) OR cost < 0 OR isinf(cost)", "missing, negative or not a number"),
    ("candidate_score", "candidate_score IS NULL OR NOT (candidate_score BETWEEN 0 AND 1)",
     "missing or outside [0, 1]"),
    ("baseline_score", "baseline_score IS NULL OR NOT (baseline_score BETWEEN 0 AND 1)",
     "missing or outside [0, 1]"),
    ("error", "error IS NULL OR error NOT IN (0, 1)", "missing or not 0/1"),
    ("fallback", "fallback IS NULL OR fallback NOT IN (0, 1)", "missing or not 0/1"),
    ("decision", "decision IS NULL OR decision NOT IN (0, 1)", "missing or not 0/1"),
    ("baseline_decision", "baseline_decision IS NULL OR baseline_decision NOT IN (0, 1)", "missing or not 0/1"),
    ("label", "label_given AND (label IS NULL OR label NOT IN (0, 1))", "not 0/1 (null is allowed)"),
)
_ID_CHECK = ("request_id", "request_id IS NULL OR request_id = ''", "missing")


def _prepare(con: duckdb.DuckDBPyConnection, relation: str) -> tuple[str, dict[str, str]]:
    """Check the log's columns and types and return the SELECT that normalises it, with the column types."""
    types = _column_types(con, relation)
    problems = _schema_problems(types)
    if problems:
        # A column-level problem affects every row; say how many so the owner can size the fix.
        rows = con.execute(f"SELECT count(*) FROM {relation}").fetchall()[0][0]
        raise SignalInputError([(c, rows, f"{detail}; all {rows} rows affected") for c, detail in problems])
    return f"SELECT {_projection(types)} FROM {relation}", types


def _release_filter(release: str | None) -> tuple[str, dict[str, Any]]:
    if release is None:
        return "", {}
    return "WHERE release = $release", {"release": release}


def _validate(con: duckdb.DuckDBPyConnection, normalised: str, *, release: str | None, with_ids: bool) -> int:
    """Count bad rows per check, raise SignalInputError naming each bad column, else return the row count."""
    where, params = _release_filter(release)
    checks = ((_ID_CHECK,) if with_ids else ()) + _ROW_CHECKS
    counts = con.execute(
        f"SELECT count(*), {', '.join(f'count_if({cond})' for _, cond, _ in checks)} FROM ({normalised}) {where}",
        params,
    ).fetchall()[0]
    total, problems = counts[0], []
    for (column, cond, detail), bad in zip(checks, counts[1:]):
        if not bad:
            continue
        if column in ("stage", "arm"):
            values = [v for (v,) in con.execute(
                f"SELECT DISTINCT {column} FROM ({normalised}) {where} {'AND' if where else 'WHERE'} ({cond}) "
                f"ORDER BY 1 NULLS FIRST LIMIT 5", params).fetchall()]
            allowed = STAGES if column == "stage" else ARMS
            detail = f"{detail} {', '.join(repr(v) for v in values)}; expected one of {', '.join(allowed)}"
        problems.append((column, int(bad), f"{int(bad)} of {total} rows {detail}"))
    if problems:
        raise SignalInputError(problems)
    return int(total)


def validate_log(con: duckdb.DuckDBPyConnection, source: str | os.PathLike | pd.DataFrame, *,
                 release: str | None = None) -> int:
    """Validate a prediction log and return its row count; raise SignalInputError naming each bad column."""
    with _opened(con, source) as relation:
        normalised, _ = _prepare(con, relation)
        return _validate(con, normalised, release=release, with_ids=True)


# ---------------------------------------------------------------- aggregation


def _window_minutes(window_minutes: int) -> int:
    if isinstance(window_minutes, bool) or not isinstance(window_minutes, (int, np.integer)):
        raise ValueError(f"window_minutes must be an integer, got {window_minutes!r}")
    if not 0 < window_minutes <= MAX_WINDOW_MINUTES:
        raise ValueError(f"window_minutes must be between 1 and {MAX_WINDOW_MINUTES}, got {window_minutes}")
    return int(window_minutes)


_SUMS = ("requests", "errors", "fallbacks", "cost", "disagreements", "labelled", "true_positives",
         "labelled_decisions", "positives", "decisions", "labelled_score")
_RANGED = {"latency_ms": math.inf, "cost": math.inf, "candidate_score": 1.0, "baseline_score": 1.0,
           "error": 1.0, "fallback": 1.0, "decision": 1.0, "baseline_decision": 1.0}
_INTEGRAL_TYPES = re.compile(r"^(BOOLEAN|U?(TINY|SMALL|BIG|HUGE)?INT(EGER)?)$")

# Every metric is a ratio of per-window sums, so the segment='all' roll-up adds the segment sums up; only the
# latency percentiles need the raw values again, hence the second GROUP BY over the (not materialised) log.
# This beats GROUPING SETS, which would run every aggregate twice over 10M rows.
_AGGREGATE_SQL = """
WITH log AS NOT MATERIALIZED (
    SELECT *, epoch_us(ts) // $width AS bucket FROM ({normalised}) {where}
), fine AS (
    SELECT release, stage, arm, segment, bucket,
           quantile_cont(latency_ms, [0.5, 0.95, 0.99]) AS q,
           count(*) AS requests,
           sum(error) AS errors,
           sum(fallback) AS fallbacks,
           sum(cost) AS cost,
           count_if(decision <> baseline_decision) AS disagreements,
           count(label) AS labelled,
           sum(decision * label) AS true_positives,
           sum(decision) FILTER (WHERE label IS NOT NULL) AS labelled_decisions,
           sum(label) AS positives,
           sum(decision) AS decisions,
           sum(candidate_score) FILTER (WHERE label IS NOT NULL) AS labelled_score,
           {checks}
    FROM log
    GROUP BY release, stage, arm, segment, bucket
), rollup_q AS (
    SELECT release, stage, arm, bucket, quantile_cont(latency_ms, [0.5, 0.95, 0.99]) AS q
    FROM log
    GROUP BY release, stage, arm, bucket
), rollup AS (
    SELECT release, stage, arm, 'all' AS segment, bucket, {rollup_sums}
    FROM fine
    GROUP BY release, stage, arm, bucket
), windows AS (
    SELECT * FROM fine
    UNION ALL BY NAME
    SELECT * FROM rollup JOIN rollup_q USING (release, stage, arm, bucket)
)
SELECT release, stage, arm, segment, bucket,
       make_timestamp(bucket * $width) AS start,
       make_timestamp((bucket + 1) * $width) AS "end",
       requests,
       q[1] AS latency_p50_ms, q[2] AS latency_p95_ms, q[3] AS latency_p99_ms,
       errors / requests AS error_rate,
       fallbacks / requests AS fallback_rate,
       1000 * cost / requests AS cost_per_1k,
       disagreements / requests AS disagreement_rate,
       labelled,
       true_positives / nullif(labelled_decisions, 0) AS precision,
       true_positives / nullif(positives, 0) AS recall,
       decisions / requests AS positive_rate,
       (labelled_score - positives) / nullif(labelled, 0) AS calibration_gap,
       {check_names}
FROM windows
ORDER BY release, stage, arm, segment, start
"""


def _fast_checks(types: dict[str, str]) -> list[str]:
    """Return cheap per-window aggregates that reveal any bad row (nulls, ranges, non-0/1 flags)."""
    out = []
    for column in _RANGED:
        out += [f"count({column}) AS n_{column}", f"min({column}) AS lo_{column}", f"max({column}) AS hi_{column}"]
    out += ["min(label) AS lo_label", "max(label) AS hi_label", "count_if(label_given) AS n_label_given"]
    # A flag stored as a float or text could be 0.5; x * (1 - x) is 0 exactly for 0 and 1 and positive between.
    for column in (*_FLAG_COLUMNS, "label"):
        if column in types and not _INTEGRAL_TYPES.match(types[column]):
            out.append(f"sum({column} * (1 - {column})) AS frac_{column}")
    return out


def _looks_bad(fine: pd.DataFrame) -> bool:
    """Tell from the per-window check aggregates whether any row would fail validation."""
    requests = fine["requests"]
    bad = (fine["release"].isna() | (fine["release"] == "") | ~fine["stage"].isin(STAGES)
           | ~fine["arm"].isin(ARMS) | fine["segment"].isna() | fine["segment"].isin(["", "all"])
           | fine["bucket"].isna() | (fine["bucket"] < 0))
    for column, upper in _RANGED.items():
        hi = fine[f"hi_{column}"]
        # NaN compares false, so a NaN maximum (DuckDB sorts NaN last) is caught by the negated test.
        bad |= (fine[f"n_{column}"] < requests) | ~(fine[f"lo_{column}"] >= 0) | ~((hi < upper) | (hi == upper))
    bad |= (fine["lo_label"] < 0) | (fine["hi_label"] > 1) | (fine["n_label_given"] > fine["labelled"])
    for column in (c for c in fine.columns if c.startswith("frac_")):
        bad |= fine[column].fillna(0) != 0
    return bool(bad.any())


def aggregate_windows(con: duckdb.DuckDBPyConnection, source: str | os.PathLike | pd.DataFrame, *,
                      window_minutes: int, release: str | None = None) -> pd.DataFrame:
    """Aggregate a prediction log into windows per release, stage, arm and segment, plus a segment='all' roll-up."""
    width_us = _window_minutes(window_minutes) * 60 * 1_000_000
    with _opened(con, source) as relation:
        normalised, types = _prepare(con, relation)
        where, params = _release_filter(release)
        checks = _fast_checks(types)
        check_names = [c.rsplit(" AS ", 1)[1] for c in checks]
        sql = _AGGREGATE_SQL.format(
            normalised=normalised, where=where, checks=", ".join(checks), check_names=", ".join(check_names),
            rollup_sums=", ".join(f"sum({c}) AS {c}" for c in _SUMS),
        )
        frame = con.execute(sql, {**params, "width": width_us}).df()
        # Validation rides along in the same scan; only when a window looks wrong is the log scanned again to
        # count bad rows per column for the message. Nothing is returned unless every row is valid.
        if _looks_bad(frame[frame["n_latency_ms"].notna()]):
            _validate(con, normalised, release=release, with_ids=False)
            raise SignalInputError([("log", 0, "some rows failed validation")])  # unreachable if checks agree
    frame = frame.astype({"requests": "int64", "labelled": "int64"})
    return frame[list(WINDOW_COLUMNS)].reset_index(drop=True)


# ---------------------------------------------------------------- idempotent log store


def ingest_log(con: duckdb.DuckDBPyConnection, source: str | os.PathLike | pd.DataFrame) -> IngestCount:
    """Insert the log rows whose request_id is not stored yet and count inserted and duplicate rows."""
    con.execute(LOG_TABLE_DDL)
    with _opened(con, source) as relation:
        normalised, _ = _prepare(con, relation)
        rows = _validate(con, normalised, release=None, with_ids=True)
        # One statement, so it is atomic; within the file the earliest row of a request_id wins, and a
        # request_id already stored is left untouched (labels for it arrive through apply_labels).
        inserted = con.execute(f"""
            INSERT INTO {LOG_TABLE} (request_id, timestamp, release, stage, arm, segment, latency_ms, error,
                                     fallback, cost, candidate_score, baseline_score, decision,
                                     baseline_decision, label)
            SELECT request_id, ts, release, stage, arm, segment, latency_ms, CAST(error AS BOOLEAN),
                   CAST(fallback AS BOOLEAN), cost, candidate_score, baseline_score, CAST(decision AS TINYINT),
                   CAST(baseline_decision AS TINYINT), CAST(label AS TINYINT)
            FROM ({normalised})
            QUALIFY row_number() OVER (PARTITION BY request_id ORDER BY ts) = 1
            ON CONFLICT DO NOTHING
        """).fetchall()[0][0]
    return IngestCount(inserted=int(inserted), duplicates=int(rows - inserted))


def apply_labels(con: duckdb.DuckDBPyConnection, labels_source: str | os.PathLike | pd.DataFrame) -> int:
    """Set the delayed label of stored requests and return how many stored labels changed."""
    con.execute(LOG_TABLE_DDL)
    with _opened(con, labels_source) as relation:
        types = _column_types(con, relation)
        rows = con.execute(f"SELECT count(*) FROM {relation}").fetchall()[0][0]
        missing = [(c, rows, f"required column is missing; {rows} rows affected")
                   for c in ("request_id", "label") if c not in types]
        if missing:
            raise SignalInputError(missing)
        if not (_NUMERIC_TYPES.match(types["label"]) or types["label"] == "VARCHAR"):
            raise SignalInputError([("label", rows, f"has type {types['label']}; expected 0/1")])
        labels = (f'SELECT CAST(request_id AS VARCHAR) AS request_id, '
                  f'{_number_sql("label", types["label"], flag=True)} AS label FROM {relation}')
        bad_ids, bad_labels, conflicting = con.execute(f"""
            SELECT count_if(request_id IS NULL OR request_id = ''),
                   count_if(label IS NULL OR label NOT IN (0, 1)),
                   (SELECT count(*) FROM (SELECT request_id FROM ({labels}) GROUP BY request_id
                                          HAVING count(DISTINCT label) > 1))
            FROM ({labels})
        """).fetchall()[0]
        problems = []
        if bad_ids:
            problems.append(("request_id", bad_ids, f"{bad_ids} of {rows} rows missing"))
        if bad_labels:
            problems.append(("label", bad_labels, f"{bad_labels} of {rows} rows missing or not 0/1"))
        if conflicting:
            problems.append(("label", conflicting, f"{conflicting} request_ids carry conflicting labels"))
        if problems:
            raise SignalInputError(problems)
        # IS DISTINCT FROM makes a repeated label file a no-op, so the count means "labels that changed".
        changed = con.execute(f"""
            UPDATE {LOG_TABLE} AS p SET label = CAST(l.label AS TINYINT)
            FROM (SELECT DISTINCT request_id, label FROM ({labels})) AS l
            WHERE p.request_id = l.request_id AND p.label IS DISTINCT FROM CAST(l.label AS TINYINT)
        """).fetchall()[0][0]
    return int(changed)


# ---------------------------------------------------------------- models and frames


def windows_to_models(frame: pd.DataFrame) -> list[SignalWindow]:
    """Convert window rows into SignalWindow models, leaving null metrics out of each metrics dict."""
    metrics = [m for m in SIGNAL_METRICS if m in frame.columns and m != "requests"]
    out = []
    for row in frame.to_dict("records"):
        # Parallel float sums differ in the last bits from run to run; 12 significant digits keep the
        # window (and so the artifact digest) the same for the same log.
        values = {m: float(f"{float(row[m]):.12g}") for m in metrics if row[m] is not None and not pd.isna(row[m])}
        out.append(SignalWindow(
            start=_utc(row["start"]), end=_utc(row["end"]), stage=row["stage"], arm=row["arm"],
            segment=row["segment"], requests=int(row["requests"]), metrics=values,
        ))
    return out


def windows_frame(windows: Sequence[SignalWindow], *, release: str) -> pd.DataFrame:
    """Turn SignalWindow models (e.g. pre-aggregated windows) back into a window frame for stop rules."""
    rows = [{"release": release, "stage": w.stage.value, "arm": w.arm, "segment": w.segment,
             "start": w.start, "end": w.end, "requests": w.requests, **w.metrics} for w in windows]
    extra = sorted({m for w in windows for m in w.metrics} - set(WINDOW_COLUMNS))
    frame = pd.DataFrame(rows).reindex(columns=[*(c for c in WINDOW_COLUMNS if c != "labelled"), *extra])
    frame["start"] = _naive_utc(frame["start"])
    frame["end"] = _naive_utc(frame["end"])
    frame["requests"] = frame["requests"].astype("int64")
    return frame


def _utc(value: Any):
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.to_pydatetime().replace(tzinfo=timezone.utc)


def _naive_utc(series: pd.Series) -> pd.Series:
    return pd.to_datetime(series, utc=True).dt.tz_localize(None)


# ---------------------------------------------------------------- evidence kept apart


_KEYS = ["release", "stage", "arm", "segment", "start", "end", "requests"]


def evidence_by_kind(windows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Split windows into shadow, canary and A/B evidence tables that are never pooled with each other."""
    shadow = windows[windows["arm"] == "shadow"]
    shadow = shadow.assign(agreement_rate=1.0 - shadow["disagreement_rate"])
    shadow_columns = [*_KEYS, "agreement_rate", "disagreement_rate", "latency_p50_ms", "latency_p95_ms",
                      "latency_p99_ms", "cost_per_1k", "error_rate", "fallback_rate"]
    # The baseline arm is the canary's reference on the same real traffic, so it sits in that table as its own rows.
    canary = windows[windows["arm"].isin(["canary", "baseline"])]
    ab = windows[windows["arm"].isin(["treatment", "control"])]
    return {
        "shadow": shadow[[c for c in shadow_columns if c in shadow.columns]].reset_index(drop=True),
        "canary": canary.reset_index(drop=True),
        "ab": ab.reset_index(drop=True),
    }


def ab_effects(windows: pd.DataFrame, metrics: Sequence[SuccessMetric | str], *, segment: str = "all",
               stage: Stage | str | None = None, confidence: float = 0.95) -> list[Effect]:
    """Estimate treatment-minus-control effects of success metrics with confidence intervals from windows."""
    if not 0.5 < confidence < 1:
        raise ValueError(f"confidence must be in (0.5, 1), got {confidence}")
    releases = sorted(windows["release"].dropna().unique()) if "release" in windows.columns else []
    if len(releases) > 1:
        raise ValueError(f"windows hold releases {', '.join(releases)}; estimate effects for one release at a time")
    rows = windows[windows["arm"].isin(["treatment", "control"]) & (windows["segment"] == segment)]
    if stage is not None:
        rows = rows[rows["stage"] == Stage(stage).value]
    treatment, control = rows[rows["arm"] == "treatment"], rows[rows["arm"] == "control"]
    return [_effect(m, treatment, control, confidence) for m in metrics]


def _effect(metric: SuccessMetric | str, treatment: pd.DataFrame, control: pd.DataFrame, confidence: float) -> Effect:
    name = metric.metric if isinstance(metric, SuccessMetric) else metric
    target = dict(comparator=metric.comparator, target=metric.target) if isinstance(metric, SuccessMetric) else {}
    level = f"{confidence:.0%}"
    if name not in treatment.columns:
        return Effect(metric=name, method="none", unit="windows", treatment=None, control=None, difference=None,
                      low=None, high=None, confidence=confidence, n_treatment=0, n_control=0,
                      status=CheckStatus.INCONCLUSIVE, reason=f"{name} is not measured in these windows", **target)
    if name in REQUEST_RATES:
        est = _proportion_difference(treatment, control, name, confidence)
        method, unit = "difference of proportions", "requests"
    else:
        est = _welch_difference(treatment, control, name, confidence)
        method, unit = "welch", "windows"
    t_value, c_value, diff, low, high, n_t, n_c = est
    if diff is None:
        return Effect(metric=name, method=method, unit=unit, treatment=t_value, control=c_value, difference=None,
                      low=None, high=None, confidence=confidence, n_treatment=n_t, n_control=n_c,
                      status=CheckStatus.INCONCLUSIVE,
                      reason=f"{name}: too little data for an interval ({n_t} treatment and {n_c} control {unit})",
                      **target)
    sign = "no clear difference" if low <= 0 <= high else ("treatment higher" if low > 0 else "treatment lower")
    reason = (f"{name}: treatment {t_value:.4g} vs control {c_value:.4g}, difference {diff:+.4g} "
              f"({level} CI {low:+.4g} to {high:+.4g}; {sign}; {n_t} vs {n_c} {unit})")
    if target:
        met = _compare(t_value, metric.comparator, metric.target)
        status = CheckStatus.PASS if met else CheckStatus.FAIL
        reason += f"; target {metric.comparator} {metric.target:g} {'met' if met else 'not met'} by treatment"
    else:
        status = CheckStatus.PASS
        reason += "; no target"
    return Effect(metric=name, method=method, unit=unit, treatment=t_value, control=c_value, difference=diff,
                  low=low, high=high, confidence=confidence, n_treatment=n_t, n_control=n_c, status=status,
                  reason=reason, **target)


def _proportion_difference(treatment: pd.DataFrame, control: pd.DataFrame, name: str, confidence: float):
    """Wald interval of p_t - p_c over requests pooled across windows (events recovered as rate x requests)."""
    def pooled(frame: pd.DataFrame) -> tuple[float, int]:
        ok = frame[name].notna()
        events = float(np.round(frame.loc[ok, name] * frame.loc[ok, "requests"]).sum())
        return events, int(frame.loc[ok, "requests"].sum())

    (x_t, n_t), (x_c, n_c) = pooled(treatment), pooled(control)
    if n_t == 0 or n_c == 0:
        return (x_t / n_t if n_t else None, x_c / n_c if n_c else None, None, None, None, n_t, n_c)
    p_t, p_c = x_t / n_t, x_c / n_c
    se = math.sqrt(p_t * (1 - p_t) / n_t + p_c * (1 - p_c) / n_c)
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    diff = p_t - p_c
    return p_t, p_c, diff, diff - z * se, diff + z * se, n_t, n_c


def _welch_difference(treatment: pd.DataFrame, control: pd.DataFrame, name: str, confidence: float):
    """Welch t interval of the difference in per-window means (windows are the units, not requests)."""
    a = treatment[name].dropna().to_numpy(dtype=float)
    b = control[name].dropna().to_numpy(dtype=float)
    mean_a = float(a.mean()) if len(a) else None
    mean_b = float(b.mean()) if len(b) else None
    if len(a) < 2 or len(b) < 2:
        return mean_a, mean_b, None, None, None, len(a), len(b)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    diff = mean_a - mean_b
    se = math.sqrt(va + vb)
    if se == 0:
        return mean_a, mean_b, diff, diff, diff, len(a), len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    t = float(stats.t.ppf(0.5 + confidence / 2, df))
    return mean_a, mean_b, diff, diff - t * se, diff + t * se, len(a), len(b)


def _compare(value: float, comparator: str, threshold: float) -> bool:
    return {">": value > threshold, ">=": value >= threshold, "<": value < threshold,
            "<=": value <= threshold}[comparator]
