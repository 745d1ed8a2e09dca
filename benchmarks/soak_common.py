"""Shared set-up of the soak scripts (benchmarks/soak_*.py): a connection and a scratch schema.

The scenarios themselves live in tests/test_faults_*.py, so that CI and the soak runs check
exactly the same properties; the soak scripts only run them bigger and print the figures.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import joinflow as dj  # noqa: E402
from joinflow import testing  # noqa: E402

import logging  # noqa: E402

logging.getLogger("joinflow").setLevel(logging.CRITICAL)  # the injected failures are expected


@contextlib.contextmanager
def scratch_schema(backend: str):
    """(schema, tmp_path) on ``backend``; the schema is dropped afterwards."""
    with tempfile.TemporaryDirectory(prefix="jf-soak-") as tmp:
        tmp_path = pathlib.Path(tmp)
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path / 'soak.db'}"
        else:
            url = testing.PG_URL if backend == "postgresql" else testing.MYSQL_URL
            problem = testing.server_problem(url)
            if problem:
                raise SystemExit(f"{backend}: {problem}")
        cfg = dj.config.copy()
        cfg["safemode"] = False
        conn = dj.Connection(url=url, config=cfg)
        name = testing.unique_schema_name("soak")
        try:
            yield dj.Schema(name, connection=conn), tmp_path
        finally:
            testing.drop_schemas(conn, [name])
            conn.close()


def report(title: str, figures: dict) -> None:
    figures = dict(figures, finished=time.strftime("%Y-%m-%d %H:%M:%S"), pid=os.getpid())
    print(f"{title}: {json.dumps(figures, sort_keys=True)}")
