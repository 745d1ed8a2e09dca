"""Reading a joinflow pipeline manifest at DAG-parse time, without importing joinflow.

The manifest is the JSON file ``python -m joinflow.pipeline manifest`` writes (see
``joinflow.pipeline.Pipeline.to_manifest``).  Like astronomer-cosmos reading dbt's
``manifest.json`` without importing dbt, this reader needs only ``json`` and ``hashlib``:
Airflow parses each DAG file in a fresh process, where importing joinflow itself (numpy,
networkx, ...) would cost more than building the DAG.  It applies the same checks as
``joinflow.pipeline.read_manifest`` (format, version, content hash); a test keeps the two
in agreement.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

FORMAT = "joinflow-pipeline-manifest"
VERSION = 1
REGENERATE = "python -m joinflow.pipeline manifest MODULE -o FILE"


class JoinflowManifestError(RuntimeError):
    """The manifest is missing, malformed, edited, or no longer matches the pipeline's code."""


def content_hash(manifest: dict) -> str:
    """``sha256:`` + hex digest of the canonical JSON (sorted keys, compact, ASCII) of all keys but ``hash``."""
    body = {k: v for k, v in manifest.items() if k != "hash"}
    return "sha256:" + hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def load_manifest(source: Any) -> dict:
    """The checked manifest from a path or a dict; errors name the file and the fix."""
    where = "the manifest dict"
    data = source
    if not isinstance(source, dict):
        where = os.fspath(source)
        try:
            with open(where, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise JoinflowManifestError(f"Pipeline manifest {where!r} does not exist; create it with "
                                        f"`{REGENERATE.replace('FILE', where)}`.") from None
        except json.JSONDecodeError as exc:
            raise JoinflowManifestError(f"Pipeline manifest {where!r} is not valid JSON ({exc}); "
                                        f"regenerate it with `{REGENERATE}`.") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise JoinflowManifestError(f"{where} is not a joinflow pipeline manifest (no \"format\": \"{FORMAT}\").")
    if data.get("version") != VERSION:
        raise JoinflowManifestError(f"{where} has manifest version {data.get('version')!r}; joinflow-airflow reads "
                                    f"version {VERSION}: regenerate it with `{REGENERATE}`.")
    missing = [k for k in ("tables", "steps", "hash") if k not in data]
    if missing:
        raise JoinflowManifestError(f"{where} lacks {missing}; regenerate it with `{REGENERATE}`.")
    if content_hash(data) != data["hash"]:
        raise JoinflowManifestError(f"{where}: content hash mismatch (edited by hand or truncated); "
                                    f"regenerate it with `{REGENERATE}`.")
    tables = {t["name"]: t for t in data["tables"]}
    for step in data["steps"]:
        if tables.get(step["name"], {}).get("tier") not in ("Imported", "Computed"):
            raise JoinflowManifestError(f"{where}: step {step['name']!r} is not an Imported/Computed table of its "
                                        f"'tables'; regenerate it with `{REGENERATE}`.")
    return data
