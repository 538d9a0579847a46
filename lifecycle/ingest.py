"""Validate and store artifacts from a dict, JSON or YAML: the one path the UI, CLI and API share."""

from __future__ import annotations

import json
import math
from datetime import date, datetime
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from .models import AnyArtifact, Artifact
from .store import Store, StoreError

MAX_BYTES = 5 * 1024 * 1024
MAX_DEPTH = 32
_ARTIFACT = TypeAdapter(AnyArtifact)


class IngestError(ValueError):
    """Input refused before anything was written; `problems` lists (field path, message)."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{path}: {msg}" if path else msg for path, msg in problems))


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise IngestError([(key, "duplicate key")])
        out[key] = value
    return out


def _refuse_constant(name: str) -> Any:
    raise IngestError([("", f"{name} is not a valid number")])


class _StrictYamlLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses duplicate mapping keys."""


def _construct_mapping(loader: _StrictYamlLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in out:
            raise IngestError([(str(key), f"duplicate key (line {key_node.start_mark.line + 1})")])
        out[key] = loader.construct_object(value_node, deep=deep)
    return out


_StrictYamlLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _plain(obj: Any, path: str = "", depth: int = 0) -> Any:
    """Turn YAML values into JSON values, refusing NaN/inf and overly deep nesting."""
    if depth > MAX_DEPTH:
        raise IngestError([(path, f"nested deeper than {MAX_DEPTH} levels")])
    if isinstance(obj, dict):
        return {str(k): _plain(v, f"{path}.{k}" if path else str(k), depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(obj)]
    if isinstance(obj, float) and not math.isfinite(obj):
        raise IngestError([(path, f"{obj} is not a valid number")])
    if isinstance(obj, (datetime, date)):
        return obj.isoformat()
    return obj


def parse_document(data: str | bytes, fmt: str | None = None, max_bytes: int = MAX_BYTES) -> Any:
    """Parse JSON or YAML text strictly: size cap first, then no duplicate keys, no NaN or infinity."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if len(raw) > max_bytes:
        raise IngestError([("", f"input is {len(raw):,} bytes; the limit is {max_bytes:,}")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IngestError([("", f"input is not UTF-8 ({exc.reason} at byte {exc.start})")]) from None
    fmt = fmt or ("json" if text.lstrip()[:1] in ("{", "[") else "yaml")
    try:
        if fmt == "json":
            obj = json.loads(text, object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant)
        elif fmt == "yaml":
            obj = yaml.load(text, Loader=_StrictYamlLoader)  # noqa: S506 - a SafeLoader subclass
        else:
            raise IngestError([("", f"unknown format '{fmt}'; use json or yaml")])
    except json.JSONDecodeError as exc:
        raise IngestError([("", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}")]) from None
    except yaml.YAMLError as exc:
        raise IngestError([("", f"invalid YAML: {str(exc).splitlines()[0]}")]) from None
    except RecursionError:
        raise IngestError([("", f"nested deeper than {MAX_DEPTH} levels")]) from None
    return _plain(obj)


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("dataset_snapshot", "training_run", "evaluation_report", "registry_entry", "rollout_note",
                      "monitoring_signals", "retraining_trigger") and not out:
            continue  # the discriminator branch pydantic puts first says nothing the user needs
        else:
            out += f".{part}" if out else str(part)
    return out


def validation_problems(exc: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    """Turn a pydantic error into (field path, message) pairs."""
    problems = []
    for err in exc.errors(include_url=False):
        path = _loc(err["loc"])
        if err["type"] == "union_tag_invalid":
            path = "kind"
        msg = err["msg"].removeprefix("Value error, ")
        problems.append((f"{prefix}{path}" if path else prefix.rstrip("."), msg))
    return problems


def validate_artifact(obj: Any, prefix: str = "") -> Artifact:
    """Validate one artifact body strictly (no type coercion, no unknown fields)."""
    if not isinstance(obj, dict):
        raise IngestError([(prefix.rstrip("."), "an artifact must be a JSON object")])
    if "kind" not in obj:
        raise IngestError([(f"{prefix}kind", "missing: say which artifact this is")])
    try:
        return _ARTIFACT.validate_json(json.dumps(obj), strict=True)
    except ValidationError as exc:
        raise IngestError(validation_problems(exc, prefix)) from None


def validate_artifacts(obj: Any) -> list[Artifact]:
    """Validate one artifact or a list of them; every problem of every item is reported."""
    items = obj if isinstance(obj, list) else [obj]
    if not items:
        raise IngestError([("", "nothing to ingest: the list is empty")])
    artifacts, problems = [], []
    for i, item in enumerate(items):
        try:
            artifacts.append(validate_artifact(item, f"[{i}]." if isinstance(obj, list) else ""))
        except IngestError as exc:
            problems += exc.problems
    if problems:
        raise IngestError(problems)
    return artifacts


def ingest(store: Store, source: str | bytes | dict | list, actor: str, fmt: str | None = None) -> list[str]:
    """Validate and store artifacts all-or-nothing; return their digests or raise IngestError."""
    obj = parse_document(source, fmt) if isinstance(source, (str, bytes)) else source  # else already parsed JSON
    return store_validated(store, validate_artifacts(obj), actor)


def store_validated(store: Store, artifacts: list, actor: str) -> list[str]:
    """Store artifacts that `validate_artifacts` returned, all or nothing; a store refusal becomes an IngestError."""
    try:
        return store.put_artifacts_grouped(artifacts, actor, store.now())
    except StoreError as exc:
        raise IngestError([("", str(exc))]) from None
