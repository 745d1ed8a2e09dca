"""Fixtures of the dagster-joinflow tests: each backend test runs on SQLite and PostgreSQL.

The PostgreSQL URL comes from JOINFLOW_TEST_PG_URL.  A server that does not answer is
skipped locally and fails the test under CI=true.  Each test gets its own schema (dropped
afterwards) and its own importable pipeline module bound to that backend: the LC-MS
example (examples/lcms/pipeline.py) plus a computed QC step that counts its make calls.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import joinflow as dj
from joinflow import testing

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "lcms" / "pipeline.py"

QC_STEP = '''

import json as _json
import os as _os
import time as _time

COUNTER = {counter!r}
MAKE_SECONDS = {make_seconds!r}


@schema
class RunQC(dj.Computed):
    definition = """
    # quality control of a run, from its peak summary
    -> PeakSummary
    ---
    ok : bool
    """

    class Flag(dj.Part):
        definition = """
        # instruments that flagged the run
        -> master
        -> Instrument
        """

    def make(self, key):
        with open(COUNTER, "a") as f:
            f.write(_json.dumps({{"key": key, "pid": _os.getpid()}}, sort_keys=True, default=str) + "\\n")
        if (Sample & key).fetch1("matrix") == "broken":
            raise RuntimeError("detector saturated for sample " + key["sample_id"])
        _time.sleep(MAKE_SECONDS)
        self.insert1(dict(key, ok=True))
'''


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def database_url(backend, tmp_path) -> str:
    return testing.database_url(backend, tmp_path)


@pytest.fixture
def schema_name(database_url):
    """A unique schema name, dropped (with its job tables) after the test."""
    name = testing.unique_schema_name("jfdg")
    yield name
    testing.drop_schemas(database_url, [name])


class PipelineModule:
    """An importable pipeline module and what a test needs around it."""

    def __init__(self, module, name: str, path: Path, counter: Path, url: str):
        self.module = module
        self.name = name
        self.path = path  # the directory to put on sys.path / PYTHONPATH
        self.counter = counter
        self.url = url

    def make_calls(self) -> list[str]:
        """The keys of RunQC's make calls, one per call (as JSON text)."""
        return [json.dumps(c["key"], sort_keys=True) for c in self._calls()]

    def make_pids(self) -> set[int]:
        return {c["pid"] for c in self._calls()}

    def _calls(self) -> list[dict]:
        lines = self.counter.read_text().splitlines() if self.counter.exists() else []
        return [json.loads(line) for line in lines]

    def add_runs(self, samples: dict[str, str], runs_per_sample: int = 2, scans: int = 3) -> None:
        """Insert samples (id -> matrix), their runs and spectra."""
        m = self.module
        m.Sample.insert([{"sample_id": s, "organism": "human", "matrix": matrix} for s, matrix in samples.items()],
                        skip_duplicates=True)
        runs = [{"sample_id": s, "run_idx": r, "ms": "orbi1", "acquired": "2024-05-01 10:00:00",
                 "polarity": "positive"} for s in samples for r in range(runs_per_sample)]
        m.Run.insert(runs)
        m.Run.Spike.insert([dict(run, standard="caffeine", amount_pmol=1.0) for run in runs], ignore_extra_fields=True)


def make_pipeline_module(tmp_path: Path, url: str, schema: str, make_seconds: float = 0.0) -> PipelineModule:
    source = EXAMPLE.read_text()
    declaration = 'schema = dj.Schema("lcms")'
    assert declaration in source, "the example's schema declaration changed; update the test fixture"
    counter = tmp_path / "make_calls.txt"
    binding = (f"connection = dj.Connection(url={url!r})\n"
               f"connection.config['safemode'] = False\n"
               f"schema = dj.Schema({schema!r}, connection=connection)")
    code = source.replace(declaration, binding) + QC_STEP.format(counter=str(counter), make_seconds=make_seconds)
    name = f"jf_{schema}"
    moddir = tmp_path / "modules"
    moddir.mkdir(exist_ok=True)
    (moddir / f"{name}.py").write_text(code)
    sys.path.insert(0, str(moddir))
    module = __import__(name)
    return PipelineModule(module, name, moddir, counter, url)


@pytest.fixture
def pipeline_module(tmp_path, database_url, schema_name):
    pm = make_pipeline_module(tmp_path, database_url, schema_name)
    yield pm
    pm.module.connection.close()
    sys.modules.pop(pm.name, None)
    if str(pm.path) in sys.path:
        sys.path.remove(str(pm.path))


@pytest.fixture
def instance():
    import dagster as dg

    with dg.instance_for_test() as inst:
        yield inst
